"""The detector registry: one name per detector class. Workers, the app and the evaluation all
build detectors through `build`, so a name means the same thing everywhere.

Detectors are built calibrated (`Calibrated`): the score is how rare the raw score is for this
sensor, so the default threshold 0.999 means about one alarm per thousand normal readings,
whatever the detector. `calibrate = false` gives the raw score and the detector's own threshold
(for dbscan, the original program's decision: the reading is DBSCAN noise). `novelty` and
`likelihood` are the exceptions (`calibrate_default`): their scores already weigh a reading
against the sensor's own history ("more novel than anything lately", "a one-in-N surprise"), their
alarms grow rarer as they learn a sensor, and a per-sensor calibration, which holds every sensor
to a constant alarm rate, cost them most of their NAB score (novelty 74.4 -> 49.0 before its
sequence channel, likelihood 42.2 -> 0.7)."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from lib.detect.detectors.base import Decision, Detector
from lib.detect.detectors.calibrated import Calibrated
from lib.detect.detectors.ensemble import EnsembleDetector
from lib.detect.detectors.registry import REGISTRY

REGISTRY[EnsembleDetector.name] = EnsembleDetector


#: parameters of the decision step rather than of the detector
DECISION_PARAMS = {"threshold", "calibrate"}


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError naming any unknown detector or parameter."""
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(sorted(REGISTRY))})")
    sig = inspect.signature(REGISTRY[name])
    known = set(sig.parameters) | DECISION_PARAMS
    bad = set(params) - known
    if bad:
        raise ValueError(
            f"detector {name!r}: unknown parameter(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(known))})"
        )


def build(name: str, params: Mapping[str, Any] | None = None) -> tuple[Detector, Decision]:
    """A fresh detector and its decision step from a registry name and parameters."""
    params = dict(params or {})
    check_params(name, params)
    cls = REGISTRY[name]
    calibrate = params.pop("calibrate", cls.calibrate_default)
    if not isinstance(calibrate, bool):
        raise ValueError(f"detector {name!r}: calibrate must be true or false, got {calibrate!r}")
    default = Calibrated.default_threshold if calibrate else cls.default_threshold
    threshold = params.pop("threshold", default)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"detector {name!r}: threshold must be a number in [0, 1], got {threshold!r}")
    try:
        det = cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"detector {name!r}: {exc}") from None
    return (Calibrated(det) if calibrate else det), Decision(float(threshold))
