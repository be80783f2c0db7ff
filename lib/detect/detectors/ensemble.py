"""An ensemble: several registered detectors on the same readings, their scores combined.

Each member keeps its own memory and default parameters; the ensemble is ready when every member
is. `combine = "mean"` (the default) averages the members' scores: an alarm needs them to agree,
which on the NAB tuning series beat the other two ways (likelihood + cusum: mean 48.4, surprise
20.9, max 37.2). `"max"` takes the surest member. `"surprise"` first asks of each member how
unusual its current score is for this series (its deviation from the mean of the member's own
last `memory` scores, in their standard deviations), since members' scores live on different
scales; the largest deviation, squashed as `z / (z + 4.26)`, is the score, and after a score that
high only a larger surprise within `suppress` readings counts.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from lib.detect.detectors.base import Detector
from lib.detect.detectors.registry import REGISTRY
from lib.detect.detectors.suppress import Suppression

_ALARM_Z = 4.26


class EnsembleDetector(Detector):
    """Parameters: `members` (registry names), `combine` ("mean", "max" or "surprise"),
    `memory` and `suppress` (readings, for "surprise").

    >>> d = EnsembleDetector(members=("zscore", "cusum"), combine="max")
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(d.warmup)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """

    name = "ensemble"
    default_threshold = 0.5

    def __init__(
        self,
        members: tuple[str, ...] | list[str] = ("likelihood", "cusum"),
        combine: str = "mean",
        memory: int = 1000,
        suppress: int = 10,
    ):
        members = tuple(members)
        bad = [m for m in members if m not in REGISTRY or m == self.name]
        if not members or bad:
            raise ValueError(f"members must be registered detectors other than the ensemble, got {bad or 'none'}")
        if combine not in ("surprise", "max", "mean"):
            raise ValueError(f"combine must be 'surprise', 'max' or 'mean', got {combine!r}")
        if memory < 2 or suppress < 0:
            raise ValueError("memory must be at least 2 and suppress at least 0")
        self.members, self.combine, self.memory, self.suppress = members, combine, memory, suppress
        self._dets = [REGISTRY[m]() for m in members]
        self.warmup = max(d.warmup for d in self._dets)
        self.seen = 0
        self._past = [deque(maxlen=memory) for _ in self._dets]  # members' recent scores
        self._stats = [(0.0, 1.0) for _ in self._dets]
        self._suppression = Suppression(suppress, _ALARM_Z)
        self._since = 0

    @property
    def history(self) -> int:
        return max(d.history for d in self._dets) + (self.memory if self.combine == "surprise" else 0)

    def _z(self, scores) -> float:
        return max((s - m) / sd for s, (m, sd) in zip(scores, self._stats))

    def _combine(self, scores) -> float:
        if self.combine == "max":
            return float(max(scores))
        if self.combine == "mean":
            return float(np.mean(scores))
        z = max(0.0, self._suppression.apply(self._z(scores)))
        return z / (z + _ALARM_Z)

    def _learn_scores(self, scores) -> None:
        if self.combine != "surprise":
            return
        self._suppression.learn(self._z(scores))
        for past, s in zip(self._past, scores):
            past.append(s)
        self._since += 1
        # the members' score statistics move slowly: refresh them every few readings
        if self._since >= 10 or len(self._past[0]) <= 50:
            self._since = 0
            self._stats = [(float(np.mean(p)), max(float(np.std(p)), 1e-6)) for p in self._past]

    def score_one(self, x: float) -> float:
        return self._combine([d.score_one(x) if d.ready else 0.0 for d in self._dets])

    def learn_one(self, x: float) -> None:
        scores = [d.score_one(x) if d.ready else 0.0 for d in self._dets]
        if self.seen >= self.warmup:
            self._learn_scores(scores)
        for d in self._dets:
            d.learn_one(x)
        self.seen += 1

    def score_learn_many(self, xs):
        per = [d.score_learn_many(xs) for d in self._dets]
        out = []
        for i in range(len(xs)):
            ready = self.seen >= self.warmup
            scores = [p[i][1] for p in per]
            out.append((ready, self._combine(scores) if ready else 0.0))
            if ready:
                self._learn_scores(scores)
            self.seen += 1
        return out
