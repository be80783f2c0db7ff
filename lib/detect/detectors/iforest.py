"""IsolationForest on a sliding window (the original program's second algorithm).

The original program fits 100 isolation trees on its FIFO of 21 readings (the previous 20 and the
new one) for every reading and asks how easily the new reading is isolated: about 55 ms a
reading with scikit-learn, fewer readings per second than one board sends.

Scoring one reading with a forest fitted for that reading alone only needs that reading's path
through each tree, and a path can be drawn without building the rest of the tree: at each node,
draw the split uniformly between the node's smallest and largest training value (what
scikit-learn's random splitter does), keep the side the reading falls on, and stop where
scikit-learn's tree would (one training value left, all values equal, or the depth limit
ceil(log2(window size))). The path length plus c(leaf size) is scikit-learn's, so the score has
the distribution of `IsolationForest().fit(window + [x]).score_samples([x])` (tests compare the
means over many forests), for 100 trees x 5 levels of array operations instead of 100 fitted
trees. The random draws come from a counter-based hash of (seed, reading number, tree, level),
so a reading's score does not depend on how readings were batched. See docs/origins.md.

The score is scikit-learn's anomaly score `-score_samples(x)`, in (0, 1]: 0.5 is the forest's own
"no clear structure" point, values near 1 are isolated at once.
"""

from __future__ import annotations

import numpy as np

from lib.detect.detectors.window import WindowDetector, standardise_rows


def average_path_length(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful search in a binary search tree of n samples (the
    isolation forest paper's c(n), as scikit-learn computes it)."""
    n = np.asarray(n, dtype=float)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _path_keys(seed: int, reading: np.ndarray, tree: np.ndarray) -> np.ndarray:
    """A 64-bit key per (reading, tree): splitmix64 of (seed, reading number, tree), so a
    reading's draws do not depend on how readings (and sensors) are batched together."""
    with np.errstate(over="ignore"):
        z = (
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            + reading.astype(np.uint64)[:, None] * np.uint64(0xD1B54A32D192ED03)
            + tree.astype(np.uint64)[None, :] * np.uint64(0xABC98388FB8FAC03)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


# one odd multiplier per tree level: the top bits of key * multiplier are a fresh draw per level
# (multiplicative hashing), a third of the work of mixing (reading, tree, level) anew each level
_LEVEL_MULTIPLIERS = [
    np.uint64(m)
    for m in (
        0x8CB92BA72F3D8DD7,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
        0x9FB21C651E98DF25,
        0xA0761D6478BD642F,
    )
]


def _level_multiplier(level: int) -> np.uint64:
    if level < len(_LEVEL_MULTIPLIERS):
        return _LEVEL_MULTIPLIERS[level]
    return np.uint64((((level + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) | 1)


def _uniform(keys: np.ndarray, level: int) -> np.ndarray:
    """U[0, 1) as float32 for each path at `level`, from its key."""
    with np.errstate(over="ignore"):
        z = keys * _level_multiplier(level)
    z ^= z >> np.uint64(29)
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def sampled_path_scores(
    windows: np.ndarray, xs: np.ndarray, n_trees: int, seed: int, readings: int | np.ndarray
) -> np.ndarray:
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
    # rather than one (readings, trees, w) comparison made this twice as fast.
    low = windows.min(axis=1, keepdims=True)
    span = windows.max(axis=1, keepdims=True) - low
    span[span == 0] = 1.0
    ordered = np.sort(((windows - low) / span).astype(np.float32), axis=1)
    x = ((np.asarray(xs, dtype=float)[:, None] - low) / span).astype(np.float32)
    flat = ordered.ravel()
    base = (np.arange(n, dtype=np.int32 if n * w < 2**31 else np.intp) * w)[:, None]
    columns = [ordered[:, j : j + 1] for j in range(w)]
    lo_i = np.repeat(base, n_trees, axis=1)  # each path's node: flat[lo_i:hi_i], sorted
    hi_i = lo_i + w
    depth = np.zeros((n, n_trees), dtype=np.uint8)
    keys = _path_keys(seed, readings, np.arange(n_trees))
    below = np.empty((n, n_trees), dtype=bool)
    count = np.empty((n, n_trees), dtype=np.uint16 if w < 65536 else np.intp)
    for level in range(levels):
        lo_v = flat.take(lo_i)
        hi_v = flat.take(hi_i - 1)
        # a node splits unless its values are all equal (one value left is a special case)
        split = hi_v > lo_v
        if not split.any():
            break
        thr = lo_v + _uniform(keys, level) * (hi_v - lo_v)
        np.copyto(thr, lo_v, where=thr >= hi_v)  # scikit-learn's guard against max
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
    """Parameters: `window` (previous readings), `n_estimators`, `seed`.

    >>> d = IsolationForestDetector(window=20, n_estimators=50)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < d.score_one(50.0)
    True
    """

    name = "iforest"
    default_threshold = 0.6
    _chunk = 1024

    def __init__(self, window: int = 20, n_estimators: int = 100, seed: int = 0):
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be at least 1, got {n_estimators}")
        super().__init__(window)
        self.n_estimators, self.seed = n_estimators, seed

    def _row_params(self) -> tuple:
        return (self.n_estimators, self.seed)

    def _score_rows(self, prev: np.ndarray, xs: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        # the forest is fitted on the window with the new reading in it, as the original program's
        # FIFO held it: a reading far outside the window is then cut off by the first split of
        # most trees, whereas a forest of the previous readings alone sends it down with the
        # window's extreme and cannot tell a spike from a new maximum. Robust units change
        # nothing for uniform splits but keep readings near the float limit finite.
        p, q = standardise_rows(prev, xs)
        return sampled_path_scores(np.concatenate((p, q[:, None]), axis=1), q, self.n_estimators, self.seed, numbers)
