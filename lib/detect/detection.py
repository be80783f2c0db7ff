"""Per-sensor judging: which detectors run on a sensor, their windows, and the states they give.

`Judge` keeps one set of detectors per sensor, built lazily from the configuration the first time
a sensor is seen, and optionally warmed from history so that a restarted worker does not put the
sensor back into "initializing".
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Mapping

from lib.config import Config, ConfigError
from lib.detect import detectors
from lib.detect.events import EventBook, check_events_config, event_messages
from lib.detect.feedback import FEEDBACK_S, raised_threshold
from lib.detect.plan import sensor_plan
from lib.detect.rules import RuleState, check_rules, rules_for
from lib.messages import Reading, ReadingStates, StatesBatch
from lib.states import STATE_ANOMALY, STATE_CODES

log = logging.getLogger(__name__)


def check_detection_config(config: Config) -> None:
    """Build every configured detector once and read every rule table, so a bad name, parameter
    or rule stops start-up with a message naming it."""
    det = config.detection
    try:
        check_rules(config)
        check_events_config(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_params("[detection.params]", det.params)
    for sensor, override in det.sensors.items():
        where = f"[detection.sensors.{sensor}]"
        if not isinstance(override, Mapping):
            raise ConfigError(f"{where}: expected a table (with detectors and/or params), got {override!r}")
        extra = set(override) - {"detectors", "params"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))} (known: detectors, params)")
        names = override.get("detectors")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ConfigError(f"{where} detectors: expected a list of detector names, got {names!r}")
        _check_params(f"{where} params", override.get("params", {}))
    for sensor in ["*", *det.sensors]:
        for name, params in sensor_plan(config, sensor).items():
            try:
                detectors.build(name, params)
            except ValueError as exc:
                where = "[detection]" if sensor == "*" else f"[detection.sensors.{sensor}]"
                raise ConfigError(f"{where}: {exc}") from None


def _check_params(where: str, params: Any) -> None:
    """Detector parameters are a table of tables: {detector name: {parameter: value}}."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: expected a table of detector tables, got {params!r}")
    for name, table in params.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: {name} must be a table of parameters, got {table!r}")


class Judge:
    def __init__(self, config: Config, events: EventBook | None = None):
        self.config = config
        # each sensor's anomaly events (lib.detect.events), fed with what this judge decides
        self.events = events if events is not None else EventBook(config)
        self._sensors: dict[str, list[tuple[str, detectors.Detector, detectors.Decision]]] = {}
        # the operator's rejected flags, {(sensor, detector): highest rejected score} (lib.detect.feedback)
        self._floors: dict[tuple[str, str], float] = {}
        self._configured: dict[tuple[str, str], float] = {}  # each decision's threshold before them
        self._rules: dict[str, RuleState] = {}
        # the last reading of each sensor, (session, seq, ts_us), and whether its silence was told
        self._last: dict[str, tuple[str, int, int]] = {}
        self._silence_told: set[str] = set()

    def known(self, sensor: str) -> bool:
        return sensor in self._sensors

    def forget(self, sensor: str) -> None:
        """Drop the sensor's detectors (their windows are stale); the next use builds them afresh."""
        self._sensors.pop(sensor, None)
        self._rules.pop(sensor, None)

    def history_needed(self, sensor: str) -> int:
        return max([d.history for _, d, _ in self._setup(sensor)] + [self._rule_state(sensor).rules.history_needed])

    def _rule_state(self, sensor: str) -> RuleState:
        found = self._rules.get(sensor)
        if found is None:
            found = self._rules[sensor] = RuleState(rules_for(self.config, sensor))
        return found

    def _setup(self, sensor: str):
        found = self._sensors.get(sensor)
        if found is None:
            found = []
            for name, params in sensor_plan(self.config, sensor).items():
                det, decision = detectors.build(name, params)
                self._configured[(sensor, name)] = decision.threshold
                decision = detectors.Decision(raised_threshold(decision.threshold, self._floors.get((sensor, name))))
                found.append((name, det, decision))
            self._sensors[sensor] = found
        return found

    def apply_floors(self, floors: dict[tuple[str, str], float]) -> list[tuple[str, str, float]]:
        """Take in the operator's rejected flags (lib.detect.feedback): each (sensor, detector)'s
        threshold rises to its highest rejected score. Returns what moved, (sensor, detector, threshold)."""
        self._floors = dict(floors)
        moved = []
        for sensor, found in self._sensors.items():
            for i, (name, det, decision) in enumerate(found):
                threshold = raised_threshold(self._configured[(sensor, name)], self._floors.get((sensor, name)))
                if threshold != decision.threshold:
                    found[i] = (name, det, detectors.Decision(threshold))
                    moved.append((sensor, name, threshold))
        return moved

    def threshold(self, sensor: str, detector: str) -> float:
        """The threshold a sensor's detector decides with now (the operator's rejections included)."""
        return next(d.threshold for name, _, d in self._setup(sensor) if name == detector)

    def warm(self, sensor: str, values: Iterable[float], ts_us: Iterable[int] | None = None) -> None:
        """Feed history to the sensor's detectors and rules without judging it (it was judged before)."""
        values = list(values)
        for _, det, _ in self._setup(sensor):
            det.learn_many(values)
        rules = self._rule_state(sensor)
        for x, t in zip(values, ts_us if ts_us is not None else [None] * len(values)):
            rules.learn(float(x), t)

    def judge_sensors(self, batch: list[tuple[str, list[float], list[int] | None]]) -> list[dict]:
        """For each (sensor, values, ts_us): {detector or "rule:<name>": (states, scores)}, states
        as a string of lib.states.STATE_CODES letters and scores as a list, detectors in the
        sensor's plan order and then the rules; each reading is scored before it is learnt.
        Detectors of one class are scored for every sensor in one call (`score_learn_groups`).
        `ts_us` (the readings' times) lets the rate rule work per second."""
        out: list[dict] = [{} for _ in batch]
        groups: dict[type, list] = {}
        for k, (sensor, values, _) in enumerate(batch):
            for name, det, decision in self._setup(sensor):
                out[k][name] = None  # the plan's order
                groups.setdefault(type(det), []).append((k, name, det, decision, values))
        for cls, items in groups.items():
            results = cls.score_learn_groups([(det, values) for _, _, det, _, values in items])
            for (k, name, _, decision, _), (ready, scores) in zip(items, results):
                out[k][name] = decision.columns(ready, scores)
        for k, (sensor, values, ts) in enumerate(batch):
            rules = self._rule_state(sensor)
            judged = rules.judge_columns(values, ts)
            if rules.rules.active:
                out[k].update(judged)
        return out

    def judge_many(
        self, sensor: str, values: list[float], ts_us: list[int] | None = None
    ) -> list[list[tuple[str, str, float | None]]]:
        """For each value in order: [(detector or "rule:<name>", state, score)] (one sensor;
        `judge_sensors` column by column)."""
        cols = self.judge_sensors([(sensor, values, ts_us)])[0]
        return [
            [(name, STATE_CODES[codes[i]], scores[i]) for name, (codes, scores) in cols.items()]
            for i in range(len(values))
        ]

    def note_last(self, sensor: str, session: str, seq: int, ts_us: int) -> None:
        """Remember the sensor's latest reading, the anchor of a "no data" row should it go silent."""
        self._last[sensor] = (session, seq, ts_us)
        self._silence_told.discard(sensor)

    def silent(self, now_us: int, owned: set[str] | None = None) -> list[tuple[str, str, int, int]]:
        """(sensor, session, seq, ts_us) of the last reading of each sensor silent longer than its
        no-data limit (`no_data_s`, or `no_data_factor` of its usual interval) at `now_us`, each
        silence once. `owned`: the sensors this worker judges now
        (with several workers, a sensor handed to another one is not silent)."""
        out = []
        for sensor, (session, seq, ts) in self._last.items():
            if owned is not None and sensor not in owned:
                continue
            limit = self._rule_state(sensor).no_data_limit_s()
            if limit and sensor not in self._silence_told and now_us - ts > limit * 1e6:
                self._silence_told.add(sensor)
                out.append((sensor, session, seq, ts))
        return out


def judge_messages(judge: Judge, consumer, messages) -> list:
    """States messages for a polled batch of reading messages: one per sensor, in the readings' order.

    A sensor this process has not seen yet is first warmed with its history from the transport
    (readings before the first one polled were judged by an earlier run, so they are learnt, not
    judged again)."""
    by_sensor: dict[str, list] = {}
    for m in messages:
        by_sensor.setdefault(m.topic, []).append(m)
    outputs = []
    moved = consumer.moved()
    for sensor, msgs in by_sensor.items():
        if sensor in moved and judge.known(sensor):
            # Other group members judged this sensor since this process last did (a rebalance):
            # rebuild its window from history. With less history than the window (a broker that
            # came back empty), the window kept here is the better one.
            need = judge.history_needed(sensor)
            history = consumer.history(msgs[0], need) if need else []
            if len(history) >= need:
                judge.forget(sensor)
                _warm(judge, sensor, history)
            judge.events.reload(sensor)
        elif not judge.known(sensor):
            need = judge.history_needed(sensor)
            if need:
                _warm(judge, sensor, consumer.history(msgs[0], need))
    batch = [(sensor, [float(m.value) for m in msgs], Reading.times(msgs)) for sensor, msgs in by_sensor.items()]
    for (sensor, values, ts), judged in zip(batch, judge.judge_sensors(batch)):
        msgs = by_sensor[sensor]
        states = StatesBatch.of_readings(sensor, msgs, ts, judged)
        outputs.append(states.message())
        outputs += event_messages(
            judge.events.tracker(sensor).feed_columns(Reading.sessions(msgs), states.seq, ts, values, judged)
        )
        last = Reading.parse(msgs[-1])
        judge.note_last(sensor, last.session, last.seq, ts[-1])
    return outputs


def _warm(judge: Judge, sensor: str, history) -> None:
    judge.warm(sensor, [float(h.value) for h in history], Reading.times(history))


def silence_messages(judge: Judge, now_us: int, consumer=None) -> list:
    """A "rule:no_data" anomaly row for each sensor silent too long, keyed on its last reading
    (session, seq, time): storage needs no new table, and the row says where the silence began.
    The silence opens (or extends) the sensor's event; events whose quiet period has passed by
    `now_us` close."""
    owned = _owned(consumer)
    out = []
    for sensor, session, seq, ts in judge.silent(now_us, owned):
        out.append(ReadingStates(sensor, session, seq, ts, [("rule:no_data", STATE_ANOMALY, 1.0)]).message())
        out += event_messages(judge.events.tracker(sensor).silence(session, seq, ts))
    return out + event_messages(judge.events.tick(now_us, owned))


def _owned(consumer) -> set[str] | None:
    """The sensors a consumer is assigned (a Kafka group member can lose a sensor to another
    worker; the embedded transport's single worker, or no consumer, owns them all: None)."""
    owned = None if consumer is None else consumer.owned_sensors()
    return None if owned is None else set(owned)


# A poll takes about this long's worth of readings at the rate just measured: long enough that a
# poll's per-call costs are shared by many readings, short enough that a reading does not wait
# behind a large poll (over Kafka at 20,000 readings/s, 1 s gave p99 0.92-1.16 s, 0.5 s 0.78-1.07 s).
BATCH_SECONDS = 0.5


def run_detector(
    judge: Judge,
    consumer,
    stop,
    max_records: int = 5000,
    poll_timeout: float = 0.2,
    count: int | None = None,
    feedback=None,
) -> int:
    """Poll readings, judge them, and commit the states with the consumer's position (one
    transaction on the embedded transport). `feedback`, when given, returns the operator's
    rejected flags (lib.detect.feedback.rejected_floors), read at start and every FEEDBACK_S.
    Returns the number of readings judged."""
    done = 0
    next_feedback = 0.0
    data_now = 0  # the latest reading time seen: the clock for silences while readings flow
    # A stop is seen between polls, so a poll takes BATCH_SECONDS' worth of judging at the rate
    # just measured: a worker catching up on a backlog still stops (and commits) promptly.
    limit = max_records
    while not stop.is_set() and (count is None or done < count):
        started = time.monotonic()
        if feedback is not None and started >= next_feedback:
            next_feedback = started + FEEDBACK_S
            floors = feedback()
            if floors is not None:
                for sensor, name, threshold in judge.apply_floors(floors):
                    log.info(
                        "%s: %s now flags only scores above %.6g (the operator rejected a flag)",
                        sensor,
                        name,
                        threshold,
                    )
        messages = consumer.poll(limit, poll_timeout)
        if not messages:
            # caught up: wall-clock time is now the right clock for a silent sensor
            silent = silence_messages(judge, max(data_now, int(time.time() * 1e6)), consumer)
            if silent:
                consumer.commit(silent)
            continue
        outputs = judge_messages(judge, consumer, messages)
        # while a backlog is replayed, readings' own times (not the wall clock) tell whether a
        # sensor fell silent, so catching up after a restart does not look like silence
        data_now = max([data_now, *Reading.times(messages)])
        outputs += silence_messages(judge, data_now, consumer)
        consumer.commit(outputs)
        done += len(messages)
        rate = len(messages) / max(time.monotonic() - started, 1e-3)
        limit = int(min(max_records, max(100, rate * BATCH_SECONDS)))
        log.debug("judged %d readings", len(messages))
    return done
