"""Per-sensor judging: which detectors run on a sensor, their windows, and the states they give.

`Judge` keeps one set of detectors per sensor, built lazily from the configuration the first time
a sensor is seen, and optionally warmed from history so that a restarted worker does not put the
sensor back into "initializing".
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from lib import detectors
from lib.config import Config, ConfigError


def sensor_plan(config: Config, sensor: str) -> dict[str, dict[str, Any]]:
    """{detector name: parameters} for `sensor`: defaults, then `[detection.sensors.<sensor>]`."""
    det = config.detection
    override = det.sensors.get(sensor, {})
    names = override.get("detectors", det.detectors)
    plan = {}
    for name in names:
        params = {"window": det.window} if "window" in _accepted(name) else {}
        params.update(det.params.get(name, {}))
        params.update(override.get("params", {}).get(name, {}))
        plan[name] = params
    return plan


def _accepted(name: str) -> set[str]:
    import inspect
    cls = detectors.REGISTRY.get(name)
    return set(inspect.signature(cls).parameters) if cls else set()


def check_detection_config(config: Config) -> None:
    """Build every configured detector once, so a bad name or parameter stops start-up clearly."""
    det = config.detection
    for sensor in ["*", *det.sensors]:
        extra = set(det.sensors.get(sensor, {})) - {"detectors", "params"}
        if extra:
            raise ConfigError(f"[detection.sensors.{sensor}]: unknown key(s) {', '.join(sorted(extra))}"
                              " (known: detectors, params)")
        for name, params in sensor_plan(config, sensor).items():
            try:
                detectors.build(name, params)
            except ValueError as exc:
                where = "[detection]" if sensor == "*" else f"[detection.sensors.{sensor}]"
                raise ConfigError(f"{where}: {exc}") from None


class Judge:
    def __init__(self, config: Config):
        self.config = config
        self._sensors: dict[str, list[tuple[str, detectors.Detector, detectors.Decision]]] = {}

    def known(self, sensor: str) -> bool:
        return sensor in self._sensors

    def history_needed(self, sensor: str) -> int:
        return max((d.warmup for _, d, _ in self._setup(sensor)), default=0)

    def _setup(self, sensor: str):
        found = self._sensors.get(sensor)
        if found is None:
            found = []
            for name, params in sensor_plan(self.config, sensor).items():
                det, decision = detectors.build(name, params)
                found.append((name, det, decision))
            self._sensors[sensor] = found
        return found

    def warm(self, sensor: str, values: Iterable[float]) -> None:
        """Feed history to the sensor's detectors without judging it (it was judged before)."""
        values = list(values)
        for _, det, _ in self._setup(sensor):
            det.learn_many(values)

    def judge_many(self, sensor: str, values: list[float]) -> list[list[tuple[str, str, float | None]]]:
        """For each value in order: [(detector, state, score)], scoring each before learning it."""
        out: list[list] = [[] for _ in values]
        for name, det, decision in self._setup(sensor):
            for row, (ready, score) in zip(out, det.score_learn_many(values)):
                row.append((name, decision.state(ready, score), round(score, 6) if ready else None))
        return out

    def progress(self, sensor: str) -> float:
        """The seed's "Initialisation" progress: share of the warm-up seen, 1.0 once ready."""
        dets = self._setup(sensor)
        return min((min(1.0, d.seen / d.warmup) if d.warmup else 1.0 for _, d, _ in dets), default=1.0)


def judge_messages(judge: Judge, consumer, messages) -> list:
    """States messages for a polled batch of reading messages, in the readings' order.

    A sensor this process has not seen yet is first warmed with its history from the transport
    (readings before the first one polled were judged by an earlier run, so they are learnt, not
    judged again)."""
    from lib.transport.base import STATES, json_message

    by_sensor: dict[str, list] = {}
    for m in messages:
        by_sensor.setdefault(m.topic, []).append(m)
    outputs = []
    for sensor, msgs in by_sensor.items():
        if not judge.known(sensor):
            need = judge.history_needed(sensor)
            if need:
                judge.warm(sensor, [float(h.value) for h in consumer.history(msgs[0], need)])
        values = [float(m.value) for m in msgs]
        for m, states in zip(msgs, judge.judge_many(sensor, values)):
            h = m.headers
            outputs.append(json_message(STATES, sensor, {
                "session": h["session"], "seq": int(h["seq"]), "sensor": sensor, "ts_us": int(h["ts_us"]),
                "states": states}))
    return outputs


def run_detector(judge: Judge, consumer, stop, max_records: int = 5000, poll_timeout: float = 0.2,
                 count: int | None = None) -> int:
    """Poll readings, judge them, and commit the states with the consumer's position (one
    transaction on the embedded transport). Returns the number of readings judged."""
    import logging
    log = logging.getLogger(__name__)
    done = 0
    while not stop.is_set() and (count is None or done < count):
        messages = consumer.poll(max_records, poll_timeout)
        if not messages:
            continue
        outputs = judge_messages(judge, consumer, messages)
        consumer.commit(outputs)
        done += len(messages)
        log.debug("judged %d readings", len(messages))
    return done
