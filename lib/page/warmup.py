"""How many readings a detector needs before it judges: the Live view's "initialisation i/N".

Each detector has its own warm-up (`Detector.warmup`: a window of 20 for dbscan, 300 for
likelihood, plus the calibration's own readings), set by the sensor's configured parameters; so N
comes from the detector built as the worker builds it for that sensor, not from `[detection] window`.
"""

from __future__ import annotations

from lib.detect import detectors
from lib.detect.plan import sensor_plan


def warmup(config, sensor: str, detector: str) -> int | None:
    """Readings `detector` needs on `sensor` before its first verdict; None for a name the
    registry does not know (a rule, or a detector of another version)."""
    if detector not in detectors.REGISTRY:
        return None
    params = sensor_plan(config, sensor).get(detector, {})
    try:
        built, _ = detectors.build(detector, params)
    except ValueError:
        built, _ = detectors.build(detector, {})  # ran live with parameters no longer configured
    return int(built.warmup)
