"""The messages Vigie's programs pass each other, and the internal topics they travel on.

One home for the vocabulary every stage shares: the producer builds readings, rejects and session
events; the detectors build states; the simulator truth; the page labels and actions on events;
the store reads them all back. Each kind is a class that builds its transport `Message`
(`message()`) and reads one back (`parse(message)`). The bytes are those Vigie has always sent
(tests/test_messages.py pins them), so Kafka consumers of the plain reading format, and logs and
spools written before, keep working. Nothing here imports the rest of Vigie.

Readings stay plain records on their sensor's topic: the value as the board's text (UTF-8) and
the session, sequence number and receive time as headers, the format a consumer of one reading
per record expects. Everything else is JSON on an internal topic.

Adding a kind of message: its topic below (in INTERNAL if the store reads it), a dataclass with
`message()` and `parse()`, and its bytes pinned in tests/test_messages.py. The anomaly events'
snapshots travel on EVENTS as built by lib.detect.events (`{"type": "event", ...}`); operators'
actions on them are `EventAction` (`{"type": "action", ...}`).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Sequence

# Internal topics. Sensor names may not use the "_vigie" prefix (see lib.ingest.protocol).
STATES = "_vigie.states"
REJECTS = "_vigie.rejects"
SESSIONS = "_vigie.sessions"
TRUTH = "_vigie.truth"
LABELS = "_vigie.labels"  # operator verdicts from the app (the app never writes DuckDB)
EVENTS = "_vigie.events"  # anomaly events from the detectors, acknowledgements from the app
INTERNAL = (STATES, REJECTS, SESSIONS, TRUTH, LABELS, EVENTS)

# How every message names a reading: its session, its line number in the session, its receive
# time (microseconds since the epoch, UTC). A reading carries them as headers, others as JSON keys.
SESSION, SEQ, TS_US = "session", "seq", "ts_us"

# What an operator does to an event (EventAction.action).
ACK, RESOLVE = "ack", "resolve"
ACTIONS = (ACK, RESOLVE)


@dataclass(slots=True)
class Message:
    """What a transport carries: a topic, a key (the sensor, or the session: what keeps order), a
    text value and text headers."""

    topic: str
    key: str | None
    value: str
    headers: dict[str, str] = field(default_factory=dict)
    # Set on consumed messages: where the message sits, for commits and history look-ups.
    partition: int = 0
    offset: int = -1

    def json(self):
        return json.loads(self.value)


def json_message(topic: str, key: str | None, payload) -> Message:
    return Message(topic, key, json.dumps(payload, separators=(",", ":")))


@dataclass(slots=True)
class Reading:
    """One reading, as its board's line gave it (`value`: the text, e.g. "42.7"). The producer
    builds its messages with `reading_message` (no object in between: it runs once a line)."""

    sensor: str
    value: str
    session: str
    seq: int
    ts_us: int

    def message(self) -> Message:
        return reading_message(self.sensor, self.value, self.session, self.seq, self.ts_us)

    @classmethod
    def parse(cls, m: Message) -> Reading:
        h = m.headers
        return cls(m.topic, m.value, h[SESSION], int(h[SEQ]), int(h[TS_US]))

    # Columns of many reading messages, without an object per reading (the detectors' and the
    # store's loops run these at tens of thousands of readings a second).
    @staticmethod
    def sessions(messages: Sequence[Message]) -> list[str]:
        return [m.headers[SESSION] for m in messages]

    @staticmethod
    def seqs(messages: Sequence[Message]) -> list[int]:
        return [int(m.headers[SEQ]) for m in messages]

    @staticmethod
    def times(messages: Sequence[Message]) -> list[int]:
        return [int(m.headers[TS_US]) for m in messages]


def reading_message(sensor: str, value_text: str, session: str, seq: int, ts_us: int) -> Message:
    """A reading's message: the sensor's topic and key, the value as text, the rest as headers."""
    return Message(sensor, sensor, value_text, {SESSION: session, SEQ: str(seq), TS_US: str(ts_us)})


@dataclass(frozen=True, slots=True)
class StatesBatch:
    """A detector worker's states for many readings of one sensor, column by column: one encoding
    per polled batch, and the store builds its columns without a loop per row. `judged` maps a
    detector (or "rule:<name>") to its states, one letter a reading (lib.states.STATE_CODES), and
    its scores (None while initializing). `session` is one id, or one per reading when they differ."""

    sensor: str
    session: str | list[str]
    seq: list[int]
    ts_us: list[int]
    judged: dict[str, tuple[str, list]]

    @classmethod
    def of_readings(
        cls, sensor: str, readings: Sequence[Message], ts_us: Sequence[int], judged: dict[str, tuple[str, list]]
    ) -> StatesBatch:
        sessions = Reading.sessions(readings)
        return cls(
            sensor,
            sessions[0] if sessions.count(sessions[0]) == len(sessions) else sessions,
            Reading.seqs(readings),
            list(ts_us),
            judged,
        )

    def message(self) -> Message:
        return json_message(
            STATES,
            self.sensor,
            {
                "sensor": self.sensor,
                SESSION: self.session,
                SEQ: self.seq,
                TS_US: self.ts_us,
                "judged": {name: [states, scores] for name, (states, scores) in self.judged.items()},
            },
        )


@dataclass(frozen=True, slots=True)
class ReadingStates:
    """The states of one reading, spelled out (`states`: (detector, state name, score)): what the
    no-data rule sends about a sensor's last reading, and what logs of the first releases hold."""

    sensor: str
    session: str
    seq: int
    ts_us: int
    states: list

    def message(self) -> Message:
        return json_message(
            STATES,
            self.sensor,
            {
                SESSION: self.session,
                SEQ: self.seq,
                "sensor": self.sensor,
                TS_US: self.ts_us,
                "states": [list(s) for s in self.states],
            },
        )


def parse_states(m: Message) -> list[StatesBatch | ReadingStates]:
    """What a `_vigie.states` message holds: one StatesBatch (the columns), one ReadingStates (a
    reading's states spelled out), or, from a log of the first releases ("rows"), a ReadingStates
    per reading."""
    p = m.json()
    sensor = p["sensor"]
    if "judged" in p:
        return [
            StatesBatch(
                sensor,
                p[SESSION],
                p[SEQ],
                p[TS_US],
                {name: (states, scores) for name, (states, scores) in p["judged"].items()},
            )
        ]
    if "rows" in p:
        return [
            ReadingStates(sensor, session, seq, ts_us, [tuple(s) for s in judged])
            for session, seq, ts_us, judged in p["rows"]
        ]
    return [ReadingStates(sensor, p[SESSION], p[SEQ], p[TS_US], [tuple(s) for s in p["states"]])]


@dataclass(frozen=True, slots=True)
class Reject:
    """A line the producer could not read as a reading: why (lib.ingest.protocol), and its bytes
    escaped (`raw`)."""

    session: str
    seq: int
    ts_us: int
    reason: str
    raw: str

    def message(self) -> Message:
        return json_message(
            REJECTS,
            self.session,
            {SESSION: self.session, SEQ: self.seq, TS_US: self.ts_us, "reason": self.reason, "raw": self.raw},
        )

    @classmethod
    def parse(cls, m: Message) -> Reject:
        p = m.json()
        return cls(p[SESSION], p[SEQ], p[TS_US], p["reason"], p["raw"])


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent:
    """What happened to a producer's session: it started, a gap opened or closed, it ended. The
    payload is {"session", "event": kind, then the kind's fields in order}."""

    kind: ClassVar[str]
    session: str

    def message(self) -> Message:
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "session"}
        return json_message(SESSIONS, self.session, {SESSION: self.session, "event": self.kind, **body})


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStart(SessionEvent):
    kind: ClassVar[str] = "start"
    port: str | None = None
    baud: int | None = None
    host: str | None = None
    ts_us: int
    pid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionGap(SessionEvent):
    """The port was away from `start_us` to `end_us` (None: still away)."""

    kind: ClassVar[str] = "gap"
    start_us: int
    end_us: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnd(SessionEvent):
    kind: ClassVar[str] = "end"
    ts_us: int


_SESSION_EVENTS: dict[str, type] = {c.kind: c for c in (SessionStart, SessionGap, SessionEnd)}


def parse_session_event(m: Message) -> SessionEvent:
    p = m.json()
    cls = _SESSION_EVENTS.get(p.get("event"))
    if cls is None:
        raise ValueError(f"unknown session event {p.get('event')!r}")
    return cls(**{f.name: p[f.name] if f.default is MISSING else p.get(f.name, f.default) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Truth:
    """An anomaly the simulator injected: what (`kind`), on which sensor, from when to when."""

    run: str
    sensor: str
    kind: str
    start_us: int
    end_us: int

    def message(self) -> Message:
        return json_message(
            TRUTH,
            self.sensor,
            {
                "run": self.run,
                "sensor": self.sensor,
                "kind": self.kind,
                "start_us": self.start_us,
                "end_us": self.end_us,
            },
        )

    @classmethod
    def parse(cls, m: Message) -> Truth:
        p = m.json()
        return cls(p["run"], p["sensor"], p["kind"], p["start_us"], p["end_us"])


@dataclass(frozen=True, slots=True)
class Label:
    """An operator's verdict on a reading (confirmed, rejected, missed: lib.page.labels), made at
    `made_us`; the latest verdict on a reading wins."""

    session: str
    seq: int
    sensor: str
    ts_us: int
    verdict: str
    detector: str | None
    note: str | None
    made_us: int

    def message(self) -> Message:
        return json_message(
            LABELS,
            self.session,
            {
                SESSION: self.session,
                SEQ: self.seq,
                "sensor": self.sensor,
                TS_US: self.ts_us,
                "verdict": self.verdict,
                "detector": self.detector,
                "note": self.note,
                "made_us": self.made_us,
            },
        )

    @classmethod
    def parse(cls, m: Message) -> Label:
        p = m.json()
        return cls(
            p[SESSION],
            int(p[SEQ]),
            p["sensor"],
            int(p[TS_US]),
            p["verdict"],
            p.get("detector"),
            p.get("note"),
            int(p["made_us"]),
        )


@dataclass(frozen=True, slots=True)
class EventAction:
    """An operator acknowledged or resolved an anomaly event (`action`: ACK or RESOLVE)."""

    event_id: str
    action: str
    by: str
    note: str | None
    made_us: int

    def message(self) -> Message:
        return json_message(
            EVENTS,
            None,
            {
                "type": "action",
                "event_id": self.event_id,
                "action": self.action,
                "by": self.by,
                "note": self.note,
                "made_us": self.made_us,
            },
        )

    @classmethod
    def parse(cls, m: Message | dict[str, Any]) -> EventAction:
        p = m.json() if isinstance(m, Message) else m
        if p["action"] not in ACTIONS:
            raise ValueError(f"unknown event action {p['action']!r}")
        return cls(p["event_id"], p["action"], p["by"], p.get("note"), p["made_us"])
