"""Forecast residual with an anomaly likelihood: the strong streaming detector.

Two stages, after Numenta's anomaly likelihood (Ahmad et al., "Unsupervised real-time anomaly
detection for streaming data", 2017), which is much of why their detectors top NAB:
1. A raw surprise per reading: the absolute error of a naive forecast (the median of the last
   `horizon` readings) in robust units of the recent errors (median/MAD of the last `memory`
   errors). Errors, not values, are scaled, so a daily cycle or a trend costs nothing once the
   forecast follows it.
2. The likelihood that the recent surprise is unusual for this series: the mean surprise of the
   last `short` readings against the mean and deviation of surprises over the last `memory`
   readings, as a normal tail probability. A series that is always jumpy (tweets, CPU) raises
   its own bar; a quiet one flags a small change. The score is the tail on a log scale,
   `z / (z + 4.26)` of the tail's normal deviate z: 0.5 is a one-in-100,000 surprise.

Memory is long on purpose (`memory` readings, default 1000): twenty readings are too little
context for real series. Scores count from `warmup` readings (300) on, and the statistics keep
filling up to `memory`; a restarted worker feeds `history` (memory + horizon) readings, which
rebuilds the state exactly.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from lib.detect.detectors.base import Detector


class LikelihoodDetector(Detector):
    """Parameters: `horizon` (readings the forecast is the median of), `memory` (readings of
    errors and surprises kept), `short` (readings averaged into the recent surprise), `warmup`.

    >>> d = LikelihoodDetector(warmup=60)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(60)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """
    name = "likelihood"
    default_threshold = 0.5

    def __init__(self, horizon: int = 1, memory: int = 1000, short: int = 3, suppress: int = 10,
                 warmup: int = 300):
        if min(horizon, memory, short) < 1 or suppress < 0:
            raise ValueError("horizon, memory and short must be at least 1, suppress at least 0")
        self.horizon, self.memory, self.short, self.warmup = horizon, memory, short, warmup
        self.suppress = suppress
        self._zs: deque[float] = deque(maxlen=max(suppress, 1))
        self.seen = 0
        self._recent: deque[float] = deque(maxlen=horizon)
        self._errors: deque[float] = deque(maxlen=memory)
        self._surprises: deque[float] = deque(maxlen=memory)
        self._scale = (0.0, 1.0)        # median and MAD of the errors, refreshed now and then
        self._stats = (0.0, 1.0)        # mean and deviation of the surprises, likewise
        self._since = 0

    @property
    def history(self) -> int:
        return max(self.warmup, self.memory + self.horizon)

    def _surprise(self, x: float) -> float:
        if not self._recent:
            return 0.0
        err = abs(x - float(np.median(self._recent)))
        med, mad = self._scale
        return max(0.0, (err - med) / mad)

    def score_one(self, x: float) -> float:
        z = self._z(x)
        if self.suppress and self._zs:
            # an anomaly already reported in the last `suppress` readings: only a surprise beyond
            # it is news, so one event raises one alarm rather than a run of them (NAB, and an
            # operator, count each further alarm outside the event as a false positive)
            z = min(z, z - max(self._zs) + 4.26) if max(self._zs) > 4.26 else z
        return max(0.0, z) / (max(0.0, z) + 4.26)

    def _z(self, x: float) -> float:
        s = self._surprise(x)
        recent = list(self._surprises)[-(self.short - 1):] if self.short > 1 else []
        avg = (s + sum(recent)) / (1 + len(recent))
        mean, sd = self._stats
        # z itself, squashed by the caller: the same order as the tail probability without its
        # saturation (which would tie every large surprise at 1); 0.5 at z = 4.26, one in 100,000
        return (avg - mean) / sd

    def learn_one(self, x: float) -> None:
        if self.suppress:
            self._zs.append(self._z(x))
        s = self._surprise(x)
        if self._recent:
            self._errors.append(abs(x - float(np.median(self._recent))))
        self._surprises.append(s)
        self._recent.append(x)
        self.seen += 1
        self._since += 1
        # the error scale and surprise statistics move slowly: refreshing them every few readings
        # costs a fraction of recomputing medians over `memory` readings each time
        if self._since >= 10 or self.seen <= self.warmup:
            self._refresh()

    def _refresh(self) -> None:
        self._since = 0
        if len(self._errors) >= 2:
            e = np.fromiter(self._errors, float)
            med = float(np.median(e))
            mad = 1.4826 * float(np.median(np.abs(e - med)))
            self._scale = (med, mad if mad > 0 else max(float(np.std(e)), 1e-9 + 1e-6 * abs(med)))
        if len(self._surprises) >= 2:
            s = np.fromiter(self._surprises, float)
            self._stats = (float(s.mean()), max(float(s.std()), 1e-6))
