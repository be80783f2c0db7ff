"""Which detectors run on a sensor, with which parameters: the configuration's plan, read by the
judging (lib.detect.detection) and by the events' policy (lib.detect.events) alike."""

from __future__ import annotations

from typing import Any

from lib.config import Config
from lib.detect import detectors


def sensor_plan(config: Config, sensor: str) -> dict[str, dict[str, Any]]:
    """{detector name: parameters} for `sensor`: defaults, then `[detection.sensors.<sensor>]`."""
    det = config.detection
    override = det.sensors.get(sensor, {})
    names = override.get("detectors", det.detectors)
    plan = {}
    for name in names:
        cls = detectors.REGISTRY.get(name)
        params = {"window": det.window} if cls is not None and cls.seed_window else {}
        params.update(det.params.get(name, {}))
        params.update(override.get("params", {}).get(name, {}))
        plan[name] = params
    return plan
