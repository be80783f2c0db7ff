"""Two-sided CUSUM for level shifts and drift.

A slow exponentially weighted mean and variance (`alpha`) give the expected level; each reading's
standardised residual feeds two cumulative sums that grow while readings stay on one side of it
by more than `k` deviations. A level shift or a drift too small for a point detector adds up until
a sum reaches `h`; the score is `S / (S + h)`, so the default threshold 0.5 is the classic CUSUM
alarm `S > h`. After an alarm the sums restart, so a lasting shift alarms again only if it keeps
going once the baseline has caught up.
"""

from __future__ import annotations

import math

from lib.detect.detectors.base import Detector

_MAX_R = 1e6  # a residual beyond this many deviations is certain: keep sums finite
_MAX_VAR = 1e300  # readings near the float limit: squared differences overflow to inf


def _residual(x: float, mean: float, var: float) -> float:
    sd = math.sqrt(var) if var > 0 else max(abs(mean) * 1e-3, 1e-6)
    try:
        r = (x - mean) / sd
    except OverflowError:
        r = math.copysign(_MAX_R, x - mean)
    return max(-_MAX_R, min(_MAX_R, r))


class CUSUMDetector(Detector):
    """Parameters: `alpha` (baseline adaptation per reading), `k` (slack, in deviations), `h`
    (alarm level), `warmup` (readings that set the baseline).

    >>> d = CUSUMDetector(warmup=20)
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(20)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """

    name = "cusum"
    default_threshold = 0.5

    def __init__(self, alpha: float = 0.01, k: float = 0.5, h: float = 5.0, warmup: int = 50):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if h <= 0:
            raise ValueError(f"h must be positive, got {h}")
        self.alpha, self.k, self.h, self.warmup = alpha, k, h, warmup
        self.seen = 0
        self._mean = 0.0
        self._var = 0.0
        self._pos = 0.0
        self._neg = 0.0

    @property
    def history(self) -> int:
        # the baseline forgets with time constant 1 / alpha: three of those rebuild it closely
        return max(self.warmup, int(3 / self.alpha))

    def _residual(self, x: float) -> float:
        return _residual(float(x), self._mean, self._var)

    def _sums(self, x: float) -> tuple[float, float]:
        r = self._residual(x)
        return max(0.0, self._pos + r - self.k), max(0.0, self._neg - r - self.k)

    def score_one(self, x: float) -> float:
        s = max(self._sums(x))
        return s / (s + self.h)

    def learn_one(self, x: float) -> None:
        if self.seen < self.warmup:
            # plain running mean and variance while warming up: every early reading counts alike
            # written as weighted means so that readings near the float limit stay finite
            n = self.seen + 1
            old = self._mean
            self._mean = old * (1 - 1 / n) + x / n
            self._var = min(_MAX_VAR, self._var * (1 - 1 / n) + min(_MAX_VAR, abs(x - old) * abs(x - self._mean)) / n)
        else:
            self._pos, self._neg = self._sums(x)
            if max(self._pos, self._neg) > self.h:
                self._pos = self._neg = 0.0
            delta = min(abs(x - self._mean), math.sqrt(_MAX_VAR))
            self._mean = (1 - self.alpha) * self._mean + self.alpha * x
            self._var = min(_MAX_VAR, (1 - self.alpha) * (self._var + self.alpha * delta * delta))
        self.seen += 1

    def score_learn_many(self, xs):
        """`score_one` then `learn_one` for each reading, the sums computed once and the state in
        local variables: the same numbers at a fifth of the cost (a detector worker judges 20,000
        readings a second)."""
        out: list[tuple[bool, float]] = []
        xs = [float(x) for x in xs]
        i = 0
        while i < len(xs) and self.seen < self.warmup:
            out.append((False, 0.0))
            self.learn_one(xs[i])
            i += 1
        mean, var, pos, neg = self._mean, self._var, self._pos, self._neg
        a, k, h, cap = self.alpha, self.k, self.h, math.sqrt(_MAX_VAR)
        for x in xs[i:]:
            r = _residual(x, mean, var)
            pos, neg = max(0.0, pos + r - k), max(0.0, neg - r - k)
            s = max(pos, neg)
            out.append((True, s / (s + h)))
            if s > h:
                pos = neg = 0.0
            delta = min(abs(x - mean), cap)
            mean = (1 - a) * mean + a * x
            var = min(_MAX_VAR, (1 - a) * (var + a * delta * delta))
        self._mean, self._var, self._pos, self._neg = mean, var, pos, neg
        self.seen += len(xs) - i
        return out
