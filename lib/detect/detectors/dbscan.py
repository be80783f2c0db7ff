"""DBSCAN on a sliding window (the original program's first algorithm), scale-aware.

The original program (docs/origins.md) fits DBSCAN on its FIFO of 21 (the previous 20 readings
plus the new one) and calls the new reading an anomaly when DBSCAN labels it noise. A raw `eps`
means nothing across sensors (humidity in %, pressure in hPa), so distances are measured in robust
units of the window: the values are centred on the median of the previous readings and divided
by their MAD (scaled to a standard deviation). `eps = 1.0` then means "within one typical
deviation", whatever the sensor.

On one dimension DBSCAN reduces to counting neighbours in a sorted array, which gives exactly
scikit-learn's labels for the new point (tests compare the two on random windows) at a fraction
of the cost of building a `sklearn.cluster.DBSCAN` per reading.

The score is graded: 0 for a core point; for a border point, half its distance to the nearest
core point over `eps`; for noise, above 0.5 and rising towards 1 with the distance. So the default
threshold 0.5 flags exactly DBSCAN's noise.
"""

from __future__ import annotations

import numpy as np

from lib.detect.detectors.window import WindowDetector, standardise_rows


def new_point_distance(window: np.ndarray, x: float, eps: float, min_samples: int) -> float:
    """Distance from `x` to the nearest core point of DBSCAN(eps, min_samples) fitted on
    window + [x]; 0 when `x` is itself core, inf when there is no core point."""
    pts = np.sort(np.append(window, x))
    lo = np.searchsorted(pts, pts - eps, side="left")
    hi = np.searchsorted(pts, pts + eps, side="right")
    core = (hi - lo) >= min_samples
    if not core.any():
        return float("inf")
    n_x = np.searchsorted(pts, x + eps, side="right") - np.searchsorted(pts, x - eps, side="left")
    if n_x >= min_samples:
        return 0.0
    return float(np.min(np.abs(pts[core] - x)))


def new_point_distances(windows: np.ndarray, xs: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """`new_point_distance` for many (window, x) pairs at once: windows is (n, w), xs is (n,).
    All pairwise distances of w + 1 points are cheap for windows of a few tens, and one numpy
    pass over a batch costs far less than a Python call per reading."""
    pts = np.concatenate((windows, xs[:, None]), axis=1)  # (n, w + 1)
    near = np.abs(pts[:, :, None] - pts[:, None, :]) <= eps  # (n, w + 1, w + 1)
    core = near.sum(axis=2) >= min_samples  # (n, w + 1)
    d = np.abs(pts - xs[:, None])
    d = np.where(core, d, np.inf).min(axis=1)
    return np.where(core[:, -1], 0.0, d)


def dbscan_scores(distances: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        far = 1.0 - 0.5 * eps / distances
    return np.where(distances <= eps, 0.5 * distances / eps, far)


class DBSCANDetector(WindowDetector):
    """Parameters: `window` (previous readings, 20 as in the original program), `eps` in robust
    units, `min_samples` (counting the point itself, as scikit-learn does).

    >>> d = DBSCANDetector(window=20)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """

    name = "dbscan"
    default_threshold = 0.5

    def __init__(self, window: int = 20, eps: float = 1.0, min_samples: int = 4):
        if not eps > 0 or min_samples < 1:
            raise ValueError(f"eps must be positive and min_samples at least 1, got {eps!r}, {min_samples!r}")
        super().__init__(window)
        self.eps, self.min_samples = eps, min_samples

    def _row_params(self) -> tuple:
        return (self.eps, self.min_samples)

    def _score_rows(self, prev: np.ndarray, xs: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        p, q = standardise_rows(prev, xs)
        return dbscan_scores(new_point_distances(p, q, self.eps, self.min_samples), self.eps)
