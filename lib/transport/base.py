"""One transport interface between the producer, the detector workers and the store.

The shape is Kafka's: named topics (one per sensor, as in the seed, plus internal `_vigie.*`
topics), producers that send, consumer groups that poll and then commit what they have finished.
`embedded` implements it with a local SQLite log (no broker); `kafkabus` with kafka-python.
Optional abilities (`create_topics`, `prune`, `owned_sensors`, `moved`) are methods with a default
here, so callers never ask whether a transport has them.
"""
from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# Internal topics. Sensor names may not use the "_vigie" prefix (see lib.ingest.protocol).
STATES = "_vigie.states"
REJECTS = "_vigie.rejects"
SESSIONS = "_vigie.sessions"
TRUTH = "_vigie.truth"
LABELS = "_vigie.labels"      # operator verdicts from the app (the app never writes DuckDB)
EVENTS = "_vigie.events"      # anomaly events from the detectors, acknowledgements from the app
INTERNAL = (STATES, REJECTS, SESSIONS, TRUTH, LABELS, EVENTS)


@dataclass(slots=True)
class Message:
    topic: str
    key: str | None
    value: str
    headers: dict[str, str] = field(default_factory=dict)
    # Set on consumed messages: where the message sits, for commits and history look-ups.
    partition: int = 0
    offset: int = -1

    def json(self):
        return json.loads(self.value)


def reading_message(sensor: str, value_text: str, session: str, seq: int, ts_us: int) -> Message:
    """A reading as the seed sent it (the value as UTF-8 text) with its metadata in headers."""
    return Message(sensor, sensor, value_text, {"session": session, "seq": str(seq), "ts_us": str(ts_us)})


def json_message(topic: str, key: str | None, payload) -> Message:
    return Message(topic, key, json.dumps(payload, separators=(",", ":")))


def states_message(sensor: str, readings: Sequence[Message], ts_us: Sequence[int],
                   judged: dict[str, tuple[str, list]]) -> Message:
    """One message with the states of many readings of one sensor, column by column: one encoding
    per polled batch, and the store builds its columns without a loop per row. Payload:
    {"sensor": s, "session": id (or [ids] when they differ), "seq": [...], "ts_us": [...],
    "judged": {detector or "rule:<name>": ["nnai...", [score or null, ...]]}}: a state per
    reading as one letter (n normal, a anomaly, i initializing: lib.states.STATE_CODES)."""
    sessions = [m.headers["session"] for m in readings]
    return json_message(STATES, sensor, {
        "sensor": sensor,
        "session": sessions[0] if sessions.count(sessions[0]) == len(sessions) else sessions,
        "seq": [int(m.headers["seq"]) for m in readings], "ts_us": list(ts_us),
        "judged": {name: [states, scores] for name, (states, scores) in judged.items()}})


class Producer(abc.ABC):
    @abc.abstractmethod
    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages; they are durable once `flush` returns."""

    @abc.abstractmethod
    def flush(self) -> None: ...

    def close(self, drain_timeout: float = 10.0) -> None:
        """Flush, and wait up to `drain_timeout` seconds for what was flushed to reach the other
        side where that is a separate step (Kafka's spool); what is left stays durable."""
        self.flush()


class Consumer(abc.ABC):
    """A member of a consumer group. `poll` returns messages after the last commit, in order per
    sensor; `commit` marks everything polled so far as done, optionally producing `outputs` first
    (atomically where the transport can)."""

    @abc.abstractmethod
    def poll(self, max_records: int = 1000, timeout: float = 0.5) -> list[Message]: ...

    @abc.abstractmethod
    def commit(self, outputs: Sequence[Message] = ()) -> None: ...

    @abc.abstractmethod
    def history(self, message: Message, n: int) -> list[Message]:
        """Up to `n` messages of the same sensor stored just before `message`, oldest first: what a
        worker needs to rebuild a window after a restart or a rebalance."""

    def owned_sensors(self) -> set[str] | None:
        """The sensor topics this member is assigned now, when other members of its group may
        hold others (a sensor handed to another worker is not silent); None: every sensor."""
        return None

    def moved(self) -> set[str]:
        """Sensor topics whose stream this consumer did not follow without a break since the last
        call (another group member handled them meanwhile, or they were re-read): a window kept in
        memory for them may be stale and should be rebuilt from `history`. One member per group
        (the embedded transport) never has any."""
        return set()

    def close(self) -> None:
        pass


class Transport(abc.ABC):
    """A way for programs to pass messages. Subclasses name themselves in lib.transport.TRANSPORTS."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config) -> "Transport":
        """The transport as the configuration ([transport], [paths]) sets it up."""

    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str] = (), sensors: bool = False) -> Consumer:
        """Join `group`, reading the internal `topics` and, if `sensors`, every sensor topic."""

    def create_topics(self, topics: Iterable[str]) -> None:
        """Make sure `topics` exist before consumers join (a group would otherwise rebalance as
        each one appears). A transport whose topics need no creating does nothing."""

    def prune(self, older_than_s: float) -> int:
        """Drop messages every group has finished with that are older than `older_than_s`; returns
        how many went. A transport whose broker keeps its own retention does nothing."""
        return 0

    def backlog(self) -> dict[str, int] | None:
        """Per consumer group, about how many messages it has yet to commit (the page's health);
        None when this transport cannot tell."""
        return None

    def close(self) -> None:
        pass
