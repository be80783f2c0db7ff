"""The one detector interface (after River's `score_one` / `learn_one`).

Contract, checked for every registered detector by tests/test_detector_contract.py:
- `score_one(x)` returns a float in [0, 1]; higher means more anomalous. It does not change the
  detector: score first, then `learn_one(x)`, so a reading never judges itself.
- `ready` is False until the detector has seen enough readings (`warmup`); while it is False the
  reading's state is "initializing" and its score means nothing.
- Deciding is separate from scoring: `Decision` turns a score into normal / anomaly with a
  threshold that each detector suggests (`default_threshold`) and the configuration may change.
- Constructors only store parameters and empty state; same parameters and seed, same scores.
- Detectors are picklable, and `warmup` readings of history rebuild their state after a restart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence

import numpy as np

from lib.states import STATE_ANOMALY, STATE_INITIALIZING, STATE_NORMAL, state_letters


class Detector(abc.ABC):
    name: ClassVar[str]
    default_threshold: ClassVar[float] = 0.5
    #: built calibrated unless the configuration says otherwise (lib.detect.detectors.calibrated):
    #: False for a detector whose own score already weighs a reading against the sensor's history
    calibrate_default: ClassVar[bool] = True
    #: the parameter values tuning on NAB chose among ({name: [values]}), for a cross-validated
    #: score that re-chooses them without the series it is scored on (lib.detect.evaluation)
    nab_grid: ClassVar[dict | None] = None

    #: readings needed before scores mean something, and readings of history that rebuild the state
    warmup: int = 20
    #: True for the original program's detectors (docs/origins.md), whose `window` follows
    #: `[detection] window` (its 20);
    #: the longer-memory detectors keep their own default, since 20 readings are too little
    #: context on real series (daily cycles, plateaus, level shifts).
    seed_window: ClassVar[bool] = False

    @property
    def history(self) -> int:
        """Readings of history a restarted worker feeds a fresh detector so it scores as the old
        one did: the warm-up, or more for detectors whose memory outlasts it."""
        return self.warmup

    @property
    def ready(self) -> bool:
        return self.seen >= self.warmup

    seen: int = 0

    @abc.abstractmethod
    def score_one(self, x: float) -> float: ...

    @abc.abstractmethod
    def learn_one(self, x: float) -> None: ...

    def score_learn_many(self, xs: Sequence[float]) -> list[tuple[bool, float]]:
        """(ready, score) for each reading in turn, learning each after scoring it. Detectors override
        this where scoring many readings at once is cheaper than one at a time."""
        out = []
        for x in xs:
            ready = self.ready
            out.append((ready, self.score_one(x) if ready else 0.0))
            self.learn_one(x)
        return out

    def learn_many(self, xs: Iterable[float]) -> None:
        for x in xs:
            self.learn_one(x)

    @classmethod
    def score_learn_groups(
        cls, groups: Sequence[tuple["Detector", Sequence[float]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`score_learn_many` for several detectors of this class at once (a worker's sensors, one
        detector each), as (ready, scores) arrays per detector. Classes override it where one
        numpy pass over every sensor's windows costs less than a pass per sensor: at 100 sensors
        the per-call overhead was most of the scoring time."""
        out = []
        for det, xs in groups:
            rows = det.score_learn_many(xs)
            out.append(
                (
                    np.fromiter((r for r, _ in rows), dtype=bool, count=len(rows)),
                    np.fromiter((s for _, s in rows), dtype=float, count=len(rows)),
                )
            )
        return out


@dataclass(frozen=True)
class Decision:
    """Score -> state: anomaly when the score is above the threshold."""

    threshold: float

    def state(self, ready: bool, score: float) -> str:
        if not ready:
            return STATE_INITIALIZING
        return STATE_ANOMALY if score > self.threshold else STATE_NORMAL

    def columns(self, ready: np.ndarray, scores: np.ndarray) -> tuple[str, list[float | None]]:
        """Many readings' states, a letter each (lib.states.STATE_CODES), and the stored scores
        (None while initializing). Not rounded: calibrated scores differ in their last digits
        (0.99999 and 0.9999999 are one in 100,000 and one in ten million)."""
        rounded = np.asarray(scores, dtype=float).tolist()
        if not ready.all():
            rounded = [s if r else None for r, s in zip(ready.tolist(), rounded)]
        return state_letters(scores > self.threshold, ready), rounded
