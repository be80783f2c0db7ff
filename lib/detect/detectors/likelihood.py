"""Forecast residual with an anomaly likelihood.

Two stages, after Numenta's anomaly likelihood (Ahmad et al., "Unsupervised real-time anomaly
detection for streaming data", 2017):
1. A raw surprise per reading: the absolute error of a naive forecast (the median of the last
   `horizon` readings, so one spike does not make its neighbour look wrong too) in robust units
   of the recent errors (median/MAD of the last `memory` errors). Errors, not values, are scaled,
   so a daily cycle or a trend costs nothing once the forecast follows it.
2. How unusual that surprise is for this series: the reading's own surprise, and the mean surprise
   of the last `short` readings (a lasting change made of small steps), each against the mean and
   deviation of surprises over the last `memory` readings; the larger of the two deviates, z.
   A series that is always jumpy raises its own bar; a quiet one flags a small change. The score
   is `z / (z + 4.26)`: 0.5 at z = 4.26, a one-in-100,000 normal tail (the default threshold
   is 0.6: the surprises of successive readings are not independent). After an alarm, only a
   larger surprise within `suppress` readings counts (`Suppression`), so one event is one alarm.

Memory is long on purpose (`memory` readings, default 1000): twenty readings are too little
context for real series. Scores count from `warmup` readings (300) on; a restarted worker feeds
`history` (memory + horizon) readings, which rebuilds the state.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from lib.detect.detectors.base import Detector
from lib.detect.detectors.suppress import Suppression

_ALARM_Z = 4.26
_MAX_Z = 1e6  # a surprise beyond this is certain: keep z (and the score) finite
_MAX_ERROR = 1e300  # readings near the float limit: their differences overflow to inf


class LikelihoodDetector(Detector):
    """Parameters: `horizon` (readings the forecast is the median of), `memory` (readings of
    errors and surprises kept), `short` (readings averaged into the recent surprise), `suppress`
    (readings after an alarm when only a larger surprise counts), `warmup`.

    >>> d = LikelihoodDetector(warmup=60)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(60)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """

    name = "likelihood"
    # 0.5 is a one-in-100,000 surprise, but successive surprises are not independent: on plain
    # Gaussian noise it flagged 0.55% of readings, at 0.6 0.02% (NAB's best threshold is 0.6 too)
    default_threshold = 0.6
    # its score is already a likelihood against the sensor's own recent surprises; calibrated on
    # top, it held every sensor to a constant alarm rate and fell from 42.2 to 0.7 on NAB
    calibrate_default = False

    def __init__(self, horizon: int = 3, memory: int = 1000, short: int = 3, suppress: int = 10, warmup: int = 300):
        if min(horizon, memory, short, warmup) < 1 or suppress < 0:
            raise ValueError("horizon, memory, short and warmup must be at least 1, suppress at least 0")
        self.horizon, self.memory, self.short, self.warmup = horizon, memory, short, warmup
        self.suppress = suppress
        self._suppression = Suppression(suppress, _ALARM_Z)
        self.seen = 0
        self._recent: deque[float] = deque(maxlen=horizon)
        self._errors: deque[float] = deque(maxlen=memory)
        self._surprises: deque[float] = deque(maxlen=memory)
        self._last_surprises: deque[float] = deque(maxlen=max(short - 1, 1))
        self._scale = (0.0, 1.0)  # median and MAD of the errors, refreshed now and then
        self._stats = (0.0, 1.0)  # mean and deviation of the surprises, likewise
        self._since = 0

    @property
    def history(self) -> int:
        return max(self.warmup, self.memory + self.horizon)

    def _error(self, x: float) -> float | None:
        recent = self._recent
        if not recent:
            return None
        if len(recent) == 3:  # the default horizon: a median of three without numpy
            a, b, c = recent
            forecast = max(min(a, b), min(max(a, b), c))
        else:
            forecast = float(np.median(recent))
        e = abs(x - forecast)
        return e if e < _MAX_ERROR else _MAX_ERROR

    def _surprise(self, e: float | None) -> float:
        if e is None:
            return 0.0
        med, mad = self._scale
        return min(_MAX_Z, max(0.0, (e - med) / mad))

    def _z(self, s: float) -> float:
        mean, sd = self._stats
        z_now = (s - mean) / sd
        if self.short > 1:
            recent = self._last_surprises
            avg = (s + sum(recent)) / (1 + len(recent))
            # a mean of n surprises varies sqrt(n) times less than one surprise
            z_now = max(z_now, (avg - mean) / sd * math.sqrt(1 + len(recent)))
        return min(z_now, _MAX_Z)

    def score_one(self, x: float) -> float:
        z = max(0.0, self._suppression.apply(self._z(self._surprise(self._error(x)))))
        return z / (z + _ALARM_Z)

    def learn_one(self, x: float) -> None:
        e = self._error(x)
        s = self._surprise(e)
        self._suppression.learn(self._z(s))
        if e is not None:
            self._errors.append(e)
        self._surprises.append(s)
        self._last_surprises.append(s)
        self._recent.append(x)
        self.seen += 1
        self._since += 1
        # the error scale and surprise statistics move slowly: refreshing them every 25 readings
        # costs a fraction of recomputing medians over `memory` readings each time
        if self._since >= 25 or self.seen <= self.warmup:
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
