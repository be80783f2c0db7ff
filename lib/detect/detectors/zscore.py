"""Robust z-score: how many robust deviations a reading sits from the median of its recent past.

The median and the MAD (scaled to a normal's standard deviation) of the previous `window`
readings stand for the mean and the standard deviation: a spike inside the window moves neither,
so one anomaly does not hide the next. The score is `z / (z + 3)`: 0.5 at three deviations
(the default threshold), rising towards 1.
"""

from __future__ import annotations

import numpy as np

from lib.detect.detectors.window import WindowDetector, standardise_rows


def z_to_score(z):
    return z / (z + 3.0)


class RobustZScoreDetector(WindowDetector):
    """Parameters: `window` (previous readings; longer than the original program's 20 so a daily
    cycle or a noisy plateau is part of "normal").

    >>> d = RobustZScoreDetector(window=20)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """

    name = "zscore"
    default_threshold = 0.5
    seed_window = False

    def __init__(self, window: int = 200):
        super().__init__(window)

    def _score_rows(self, prev: np.ndarray, xs: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        return z_to_score(np.abs(standardise_rows(prev, xs)[1]))
