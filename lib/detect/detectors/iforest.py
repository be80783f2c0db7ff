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

`method = "paths"` (the default) is the seed's refit-on-every-reading without its cost. Scoring
one reading with a forest that is fitted for that reading alone only needs that reading's path
through each tree, and a path can be drawn without building the rest of the tree: at each node,
draw the split uniformly between the node's smallest and largest training value (what
scikit-learn's random splitter does), keep the side the reading falls on, and stop where
scikit-learn's tree would (one training value left, all values equal, or the depth limit
ceil(log2(window))). The path length plus c(leaf size) is scikit-learn's, so the score has the
distribution of the seed's `IsolationForest().fit(window).score_samples(x)` (tests compare the
means over many forests), for 100 trees x 5 levels of array operations instead of 100 fitted
trees. The random draws come from a counter-based hash of (seed, reading number, tree, level),
so a reading's score does not depend on how readings were batched. `method = "table"` keeps a
scikit-learn forest for `refit_every` readings and scores through its exact step table.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lib.detect.detectors.base import Detector
from lib.detect.detectors.window import WindowDetector, robust_scale, sliding_previous, standardise_rows

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest


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


def _uniform(seed: int, reading: np.ndarray, tree: np.ndarray, level: int) -> np.ndarray:
    """U[0, 1) as float32 from splitmix64 of (seed, reading number, tree, level): the same draw
    for a reading however readings (and sensors) are batched together."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             + reading.astype(np.uint64)[:, None] * np.uint64(0xD1B54A32D192ED03)
             + tree.astype(np.uint64)[None, :] * np.uint64(0xABC98388FB8FAC03)
             + np.uint64(level) * np.uint64(0x8CB92BA72F3D8DD7))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def sampled_path_scores(windows: np.ndarray, xs: np.ndarray, n_trees: int, seed: int,
                        readings: int | np.ndarray) -> np.ndarray:
    """Anomaly scores of xs[i] by a fresh isolation forest of `n_trees` fitted on windows[i]
    (n, w), drawing only each reading's path (see the module docstring). `readings`: each
    reading's number in its sensor's stream (the random draws' counter), or the first one's."""
    n, w = windows.shape
    if np.ndim(readings) == 0:
        readings = readings + np.arange(n)
    levels = int(np.ceil(np.log2(max(w, 2))))
    # scikit-learn fits its trees on float32 values; so do we, after moving each window to [0, 1]
    # so that float32 keeps the resolution of the window's own spread (uniform splits do not
    # care about the scale). float32, in-place updates and a loop over the window's w columns
    # rather than one (readings, trees, w) comparison made this twice as fast (issue 8).
    low = windows.min(axis=1, keepdims=True)
    span = windows.max(axis=1, keepdims=True) - low
    span[span == 0] = 1.0
    ordered = np.sort(((windows - low) / span).astype(np.float32), axis=1)
    x = ((np.asarray(xs, dtype=float)[:, None] - low) / span).astype(np.float32)
    flat = ordered.ravel()
    base = (np.arange(n, dtype=np.intp) * w)[:, None]
    columns = [ordered[:, j:j + 1] for j in range(w)]
    lo_i = np.repeat(base, n_trees, axis=1)               # each path's node: flat[lo_i:hi_i], sorted
    hi_i = lo_i + w
    depth = np.zeros((n, n_trees), dtype=np.uint8)
    trees = np.arange(n_trees)
    below = np.empty((n, n_trees), dtype=bool)
    count = np.empty((n, n_trees), dtype=np.uint16 if w < 65536 else np.intp)
    for level in range(levels):
        lo_v = flat.take(lo_i)
        hi_v = flat.take(hi_i - 1)
        # a node splits unless its values are all equal (one value left is a special case)
        split = hi_v > lo_v
        if not split.any():
            break
        thr = lo_v + _uniform(seed, readings, trees, level) * (hi_v - lo_v)
        np.copyto(thr, lo_v, where=thr >= hi_v)          # scikit-learn's guard against max
        # training values <= thr go left; in sorted order that is a prefix of the node
        count.fill(0)
        for col in columns:
            np.less_equal(col, thr, out=below)
            np.add(count, below, out=count, casting="unsafe")
        cut = base + count
        left = x <= thr
        np.copyto(hi_i, cut, where=split & left)
        np.copyto(lo_i, cut, where=split & ~left)
        np.add(depth, split, out=depth, casting="unsafe")
    sizes = hi_i - lo_i
    paths = depth + (_C_TABLE[sizes] if w < len(_C_TABLE) else average_path_length(sizes))
    return 2.0 ** (-paths.mean(axis=1) / average_path_length(np.array([w]))[0])


_C_TABLE = average_path_length(np.arange(257))


class IsolationForestDetector(WindowDetector):
    """Parameters: `window`, `n_estimators`, `refit_every` (readings between refits, method
    "table" only), `seed`, `method`.

    >>> d = IsolationForestDetector(window=20, n_estimators=50)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < d.score_one(50.0)
    True
    """
    name = "iforest"
    default_threshold = 0.6
    _chunk = 1024

    def __init__(self, window: int = 20, n_estimators: int = 100, refit_every: int = 1000, seed: int = 0,
                 method: str = "paths"):
        if refit_every < 1:
            raise ValueError(f"refit_every must be at least 1, got {refit_every}")
        if method not in ("paths", "table"):
            raise ValueError(f"method must be 'paths' or 'table', got {method!r}")
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be at least 1, got {n_estimators}")
        super().__init__(window)
        self.n_estimators, self.refit_every, self.seed, self.method = n_estimators, refit_every, seed, method
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._since_fit = 0

    def _row_params(self) -> tuple:
        return (self.n_estimators, self.seed)

    def _score_rows(self, prev: np.ndarray, xs: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        # isolation trees split uniformly between a node's extremes: robust units change nothing
        # but keep readings near the float limit finite
        p, q = standardise_rows(prev, xs)
        return sampled_path_scores(p, q, self.n_estimators, self.seed, numbers)

    # --- method "table": a kept scikit-learn forest, refitted every `refit_every` readings ---

    def _fit(self) -> None:
        # Imported here: scikit-learn takes seconds to import, and only this method needs it
        # (every program that checks the configuration loads the registry, `make run` first).
        from sklearn.ensemble import IsolationForest
        model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        values = self._window.values()
        centre, spread = robust_scale(values)
        model.fit(((values - centre) / spread).reshape(-1, 1))
        self._table = step_table(model)
        self._since_fit = 0

    def _due(self) -> bool:
        return self._table is None or self._since_fit >= self.refit_every

    def score_one(self, x: float) -> float:
        if self.method == "paths":
            return super().score_one(x)
        if self._due():
            self._fit()
        centre, spread = robust_scale(self._window.values())
        return float(table_scores(self._table, np.array([(x - centre) / spread]))[0])

    def learn_one(self, x: float) -> None:
        super().learn_one(x)
        self._since_fit += 1

    @classmethod
    def score_learn_groups(cls, groups):
        """Method "paths" goes through the window detectors' batched path; method "table" sensor
        by sensor (`score_learn_many`)."""
        out: list = [None] * len(groups)
        paths = [k for k, (det, _) in enumerate(groups) if det.method == "paths"]
        for k, result in zip(paths, super().score_learn_groups([groups[k] for k in paths])):
            out[k] = result
        for k, (det, xs) in enumerate(groups):
            if det.method != "paths":
                out[k] = Detector.score_learn_groups.__func__(cls, [(det, xs)])[0]
        return out

    def score_learn_many(self, xs):
        """Method "table": readings between two refits are scored together with one table look-up."""
        if self.method == "paths":
            return super().score_learn_many(xs)
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
            prev = sliding_previous(self._window.values(), seg, self.window_size)
            p, q = standardise_rows(prev, seg)
            out.extend((True, float(s)) for s in table_scores(self._table, q))
            for x in seg:
                self.learn_one(float(x))
            i += n
        return out
