"""IsolationForest on a sliding window (the seed's second algorithm), with a refit cadence.

The seed refits 100 trees on its window for every reading (about 55 ms: fewer readings per second
than one board sends). Here the forest is refitted every `refit_every` readings on the window of
the previous readings and reused in between; `refit_every=1` is the seed's behaviour.

Scoring without scikit-learn's per-call cost: on one feature, every tree splits on thresholds of
that feature, so the forest's score is a step function of x that only changes at the trees'
thresholds. After each fit we compute that score once at one representative point of every step
(a tree sends x <= threshold left), walking all the fitted trees at once in numpy with
scikit-learn's formula (leaf depth plus the average path length of the leaf's samples,
normalised by the average path length of `max_samples_`), and score readings with a binary
search in that table: the numbers of `score_samples` (tests compare them), for a few
microseconds a reading, and a batch of readings is scored in one numpy call.

Between refits the signal moves on (a daily cycle, a slow drift), and a forest fitted on where
the signal was would call every new reading odd. So the forest is fitted on the window in robust
units (median and MAD, as DBSCAN's) and each reading is scored in the robust units of its own
current window: the forest keeps the window's shape, the current window supplies the level and
spread. Isolation trees split uniformly between a node's minimum and maximum, so this scaling
changes nothing when refitting every reading: `refit_every=1` gives the seed's scores.

The score is scikit-learn's anomaly score `-score_samples(x)`, already in (0, 1]: 0.5 is the
forest's own "no clear structure" point, values near 1 are isolated at once.
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from lib.detectors.base import Detector
from lib.detectors.window import Window, robust_scale, robust_scale_rows, sliding_previous


def average_path_length(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful search in a binary search tree of n samples (the
    isolation forest paper's c(n), as scikit-learn computes it)."""
    n = np.asarray(n, dtype=float)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def forest_scores(model: IsolationForest, xs: np.ndarray) -> np.ndarray:
    """`-model.score_samples(xs)` for one feature, all trees walked together in numpy."""
    trees = [est.tree_ for est in model.estimators_]
    sizes = np.array([t.node_count for t in trees])
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    left = np.concatenate([np.where(t.children_left >= 0, t.children_left + o, -1) for t, o in zip(trees, offsets)])
    right = np.concatenate([np.where(t.children_right >= 0, t.children_right + o, -1) for t, o in zip(trees, offsets)])
    thr = np.concatenate([t.threshold for t in trees])
    n_samples = np.concatenate([t.n_node_samples for t in trees])
    node = np.repeat(offsets[:, None], len(xs), axis=1)            # (trees, readings): at the roots
    depth = np.zeros(node.shape)
    while True:
        internal = left[node] >= 0
        if not internal.any():
            break
        nxt = np.where(xs[None, :] <= thr[node], left[node], right[node])
        node = np.where(internal, nxt, node)
        depth += internal
    paths = depth + average_path_length(n_samples[node])
    total = np.zeros(len(xs))
    for row in paths:   # tree by tree, in scikit-learn's summation order
        total += row
    return 2.0 ** (-total / (len(trees) * average_path_length(np.array([model.max_samples_]))[0]))


def step_table(model: IsolationForest) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, scores): the anomaly score of x is scores[searchsorted(thresholds, x)]."""
    thr = np.unique(np.concatenate([
        est.tree_.threshold[est.tree_.feature >= 0] for est in model.estimators_]))
    if len(thr) == 0:  # every tree is a single leaf: one step
        thr = np.array([0.0])
    # representatives must survive scikit-learn's cast to float32: the largest float32 at or
    # below each threshold (still inside its step), and one float32 above the last
    f = thr.astype(np.float32)
    f = np.where(f.astype(np.float64) > thr, np.nextafter(f, np.float32(-np.inf)), f)
    above = np.nextafter(np.float32(thr[-1]), np.float32(np.inf))
    reps = np.append(f, above).astype(np.float64)
    return thr, forest_scores(model, reps)


def table_scores(table: tuple[np.ndarray, np.ndarray], xs: np.ndarray) -> np.ndarray:
    thr, scores = table
    # scikit-learn compares float32 inputs with the thresholds: do the same
    xs = np.asarray(xs, dtype=np.float32).astype(np.float64)
    return scores[np.searchsorted(thr, xs, side="left")]


class IsolationForestDetector(Detector):
    """Parameters: `window`, `n_estimators`, `refit_every` (readings between refits), `seed`.

    >>> d = IsolationForestDetector(window=20, n_estimators=50)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < d.score_one(50.0)
    True
    """
    name = "iforest"
    default_threshold = 0.6
    seed_window = True

    def __init__(self, window: int = 20, n_estimators: int = 100, refit_every: int = 1000, seed: int = 0):
        if refit_every < 1:
            raise ValueError(f"refit_every must be at least 1, got {refit_every}")
        self.window_size, self.n_estimators, self.refit_every, self.seed = window, n_estimators, refit_every, seed
        self.warmup = window
        self.seen = 0
        self._window = Window(window)
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._since_fit = 0

    def _fit(self) -> None:
        model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        values = self._window.values()
        centre, spread = robust_scale(values)
        model.fit(((values - centre) / spread).reshape(-1, 1))
        self._table = step_table(model)
        self._since_fit = 0

    def _due(self) -> bool:
        return self._table is None or self._since_fit >= self.refit_every

    def score_one(self, x: float) -> float:
        if self._due():
            self._fit()
        centre, spread = robust_scale(self._window.values())
        return float(table_scores(self._table, np.array([(x - centre) / spread]))[0])

    def learn_one(self, x: float) -> None:
        self._window.push(x)
        self.seen += 1
        self._since_fit += 1

    def score_learn_many(self, xs):
        """Readings between two refits are scored together with one table look-up."""
        xs = np.asarray(xs, dtype=float)
        out: list[tuple[bool, float]] = []
        i = 0
        while i < len(xs):
            if not self.ready:
                out.append((False, 0.0))
                self.learn_one(float(xs[i]))
                i += 1
                continue
            if self._due():
                self._fit()
            n = min(self.refit_every - self._since_fit, len(xs) - i)
            seg = xs[i:i + n]
            centre, spread = robust_scale_rows(sliding_previous(self._window.values(), seg, self.window_size))
            out.extend((True, float(s)) for s in table_scores(self._table, (seg - centre) / spread))
            for x in seg:
                self.learn_one(float(x))
            i += n
        return out
