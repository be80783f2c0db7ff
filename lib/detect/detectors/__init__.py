"""The detector registry: one name per detector class. Workers, the app and the evaluation all
build detectors through `build`, so a name means the same thing everywhere."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from lib.detect.detectors.base import Decision, Detector
from lib.detect.detectors.cusum import CUSUMDetector
from lib.detect.detectors.dbscan import DBSCANDetector
from lib.detect.detectors.iforest import IsolationForestDetector
from lib.detect.detectors.likelihood import LikelihoodDetector
from lib.detect.detectors.lof import LOFDetector
from lib.detect.detectors.zscore import RobustZScoreDetector

REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls for cls in (DBSCANDetector, IsolationForestDetector, RobustZScoreDetector,
                              CUSUMDetector, LOFDetector, LikelihoodDetector)
}

from lib.detect.detectors.ensemble import EnsembleDetector  # noqa: E402  (it builds members through REGISTRY)

REGISTRY[EnsembleDetector.name] = EnsembleDetector


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError naming any unknown detector or parameter."""
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(sorted(REGISTRY))})")
    sig = inspect.signature(REGISTRY[name])
    known = set(sig.parameters) | {"threshold"}
    bad = set(params) - known
    if bad:
        raise ValueError(f"detector {name!r}: unknown parameter(s) {', '.join(sorted(bad))}"
                         f" (known: {', '.join(sorted(known))})")


def build(name: str, params: Mapping[str, Any] | None = None) -> tuple[Detector, Decision]:
    """A fresh detector and its decision step from a registry name and parameters."""
    params = dict(params or {})
    check_params(name, params)
    cls = REGISTRY[name]
    threshold = float(params.pop("threshold", cls.default_threshold))
    try:
        return cls(**params), Decision(threshold)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"detector {name!r}: {exc}") from None
