"""IsolationForest on a sliding window (the seed's second algorithm), with a refit cadence.

The seed refits 100 trees on its window for every reading (about 55 ms: fewer readings per second
than one board sends). Here the forest is refitted every `refit_every` readings on the window of
the previous readings and reused in between; `refit_every=1` is the seed's behaviour. The score is
scikit-learn's anomaly score `-score_samples(x)`, already in (0, 1]: 0.5 is the forest's own
"no clear structure" point, values near 1 are isolated at once.
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from lib.detectors.base import Detector
from lib.detectors.window import Window


class IsolationForestDetector(Detector):
    """Parameters: `window`, `n_estimators`, `refit_every` (readings between refits), `seed`.

    >>> d = IsolationForestDetector(window=20, n_estimators=50)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < d.score_one(50.0)
    True
    """
    name = "iforest"
    default_threshold = 0.6

    def __init__(self, window: int = 20, n_estimators: int = 100, refit_every: int = 10, seed: int = 0):
        self.window_size, self.n_estimators, self.refit_every, self.seed = window, n_estimators, refit_every, seed
        self.warmup = window
        self.seen = 0
        self._window = Window(window)
        self._model: IsolationForest | None = None
        self._since_fit = 0

    def _fit(self) -> None:
        self._model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self._model.fit(self._window.values().reshape(-1, 1))
        self._since_fit = 0

    def score_one(self, x: float) -> float:
        if self._model is None or self._since_fit >= self.refit_every:
            self._fit()
        return float(-self._model.score_samples(np.array([[x]]))[0])

    def learn_one(self, x: float) -> None:
        self._window.push(x)
        self.seen += 1
        self._since_fit += 1
