"""Local Outlier Factor of the new reading against the window of previous readings.

Novelty-style LOF (as scikit-learn's `LocalOutlierFactor(novelty=True)`): the window's points
get their k-distances and local reachability densities, and the new reading's LOF is its
neighbours' mean density over its own. Values are first put in robust units of the window (as
DBSCAN's) so that exact ties in a quantised signal do not make densities infinite. On one feature
and a window of 20 readings, all the distances are a small numpy array, for a batch at once.
The score is `1 - 1 / LOF` clipped at 0: 0 for an inlier (LOF <= 1), 0.5 at LOF = 2.
"""

from __future__ import annotations

import numpy as np

from lib.detect.detectors.window import WindowDetector, standardise_rows

_TINY = 1e-3  # in robust units: distances below this count as this (ties in quantised readings)


def lof_scores(windows: np.ndarray, xs: np.ndarray, k: int) -> np.ndarray:
    """LOF score of each x against its window: windows (n, w), xs (n,)."""
    p, q = standardise_rows(windows, xs)
    n, w = p.shape
    k = min(k, w - 1)
    d = np.abs(p[:, :, None] - p[:, None, :])  # (n, w, w)
    d[:, np.arange(w), np.arange(w)] = np.inf  # a point is not its own neighbour
    d = np.maximum(d, _TINY)
    order = np.argsort(d, axis=2)[:, :, :k]  # k nearest of each window point
    knn_d = np.take_along_axis(d, order, axis=2)
    k_dist = knn_d[:, :, -1]  # (n, w)
    reach = np.maximum(knn_d, np.take_along_axis(np.broadcast_to(k_dist[:, None, :], d.shape), order, axis=2))
    lrd = 1.0 / reach.mean(axis=2)  # (n, w)
    dq = np.maximum(np.abs(p - q[:, None]), _TINY)  # (n, w)
    nq = np.argsort(dq, axis=1)[:, :k]
    reach_q = np.maximum(np.take_along_axis(dq, nq, axis=1), np.take_along_axis(k_dist, nq, axis=1))
    lrd_q = 1.0 / reach_q.mean(axis=1)
    lof = np.take_along_axis(lrd, nq, axis=1).mean(axis=1) / lrd_q
    return np.clip(1.0 - 1.0 / lof, 0.0, 1.0)


class LOFDetector(WindowDetector):
    """Parameters: `window` (previous readings), `k` (neighbours).

    >>> d = LOFDetector(window=20)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """

    name = "lof"
    default_threshold = 0.5
    _chunk = 1024

    def __init__(self, window: int = 20, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        super().__init__(window)
        self.k = k

    def _row_params(self) -> tuple:
        return (self.k,)

    def _score_rows(self, prev: np.ndarray, xs: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        return lof_scores(prev, xs, self.k)
