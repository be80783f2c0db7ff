"""One transport interface between the producer, the detector workers and the store.

The shape is Kafka's: named topics (one per sensor, plus the internal `_vigie.*` topics of
lib.messages, which also defines the `Message` carried), producers that send, consumer groups
that poll and then commit what they have finished.
`embedded` implements it with a local SQLite log (no broker); `kafkabus` with kafka-python.
Optional abilities (`create_topics`, `prune`, `owned_sensors`, `moved`) are methods with a default
here, so callers never ask whether a transport has them.
"""

from __future__ import annotations

import abc
from typing import Iterable, Sequence

from lib.messages import Message


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

    backlog_unit = "messages"  # what `backlog` counts, as the page names it

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
