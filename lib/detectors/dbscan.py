"""DBSCAN on a sliding window (the seed's first algorithm), scale-aware.

The seed fits DBSCAN on its FIFO of 21 (the previous 20 readings plus the new one) and calls the
new reading an anomaly when DBSCAN labels it noise. A raw `eps` means nothing across sensors
(humidity in %, pressure in hPa), so distances are measured in robust units of the window: the
values are centred on the median of the previous readings and divided by their MAD (scaled to a
standard deviation). `eps = 1.0` then means "within one typical deviation", whatever the sensor.

On one dimension DBSCAN reduces to counting neighbours in a sorted array, which gives exactly
scikit-learn's labels for the new point (tests compare the two on random windows) at a fraction
of the cost of building a `sklearn.cluster.DBSCAN` per reading.

The score is graded: 0 for a core point; for a border point, half its distance to the nearest
core point over `eps`; for noise, above 0.5 and rising towards 1 with the distance. So the default
threshold 0.5 flags exactly DBSCAN's noise.
"""
from __future__ import annotations

import numpy as np

from lib.detectors.base import Detector
from lib.detectors.window import Window, robust_scale


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


def dbscan_score(distance: float, eps: float) -> float:
    if distance <= eps:
        return 0.5 * distance / eps
    return 1.0 - 0.5 * eps / distance


class DBSCANDetector(Detector):
    """Parameters: `window` (previous readings, the seed's 20), `eps` in robust units, `min_samples`
    (counting the point itself, as scikit-learn does).

    >>> d = DBSCANDetector(window=20)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """
    name = "dbscan"
    default_threshold = 0.5

    def __init__(self, window: int = 20, eps: float = 1.0, min_samples: int = 4):
        self.window_size, self.eps, self.min_samples = window, eps, min_samples
        self.warmup = window
        self.seen = 0
        self._window = Window(window)

    def score_one(self, x: float) -> float:
        values = self._window.values()
        centre, spread = robust_scale(values)
        d = new_point_distance((values - centre) / spread, (x - centre) / spread, self.eps, self.min_samples)
        return dbscan_score(d, self.eps)

    def learn_one(self, x: float) -> None:
        self._window.push(x)
        self.seen += 1
