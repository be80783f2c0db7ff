"""An ensemble: several registered detectors on the same readings, their scores combined.

Each member keeps its own memory and default parameters; the ensemble is ready when every member
is. `combine = "max"` raises an alarm when any member is sure (members' scores are all calibrated
so that 0.5 is their own alarm point); `"mean"` needs them to agree.
"""
from __future__ import annotations

import numpy as np

from lib.detectors.base import Detector


class EnsembleDetector(Detector):
    """Parameters: `members` (registry names), `combine` ("max" or "mean").

    >>> d = EnsembleDetector(members=("zscore", "cusum"))
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(d.warmup)])
    >>> d.score_one(10.2) < 0.5 < d.score_one(50.0)
    True
    """
    name = "ensemble"
    default_threshold = 0.5

    def __init__(self, members: tuple[str, ...] | list[str] = ("likelihood", "zscore", "cusum"),
                 combine: str = "max"):
        from lib.detectors import REGISTRY
        members = tuple(members)
        bad = [m for m in members if m not in REGISTRY or m == self.name]
        if not members or bad:
            raise ValueError(f"members must be registered detectors other than the ensemble, got {bad or 'none'}")
        if combine not in ("max", "mean"):
            raise ValueError(f"combine must be 'max' or 'mean', got {combine!r}")
        self.members, self.combine = members, combine
        self._dets = [REGISTRY[m]() for m in members]
        self.warmup = max(d.warmup for d in self._dets)
        self.seen = 0

    @property
    def history(self) -> int:
        return max(d.history for d in self._dets)

    def _reduce(self, scores: np.ndarray) -> np.ndarray:
        return scores.max(axis=0) if self.combine == "max" else scores.mean(axis=0)

    def score_one(self, x: float) -> float:
        return float(self._reduce(np.array([[d.score_one(x)] for d in self._dets]))[0])

    def learn_one(self, x: float) -> None:
        for d in self._dets:
            d.learn_one(x)
        self.seen += 1

    def score_learn_many(self, xs):
        per = [d.score_learn_many(xs) for d in self._dets]
        out = []
        for i in range(len(xs)):
            ready = self.seen + i >= self.warmup
            out.append((ready, float(self._reduce(np.array([p[i][1] for p in per]))) if ready else 0.0))
        self.seen += len(xs)
        return out
