"""The consumer group member: polls whole records, commits by hand after the work is done,
re-reads a sensor's history to rebuild a window, and notices a broker that came back empty.

Consumers subscribe to a pattern (every sensor topic, plus the internal topics asked for),
partitions spread round-robin so a second worker takes half of the sensors. A poll returns whole
records, so committed offsets fall between records. A broker that comes back empty (a new
cluster, or Tansu's memory storage) has lost topics and committed offsets: positions past the new
log end are reset to the earliest offset, and before each commit the group's committed offsets are
checked against ours; if they went back, the consumer re-reads from what the cluster has. Replays
are harmless downstream (primary keys and watermarks in the store).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Sequence

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from lib.messages import Message
from lib.transport.base import Consumer
from lib.transport.kafkabus.assignor import RoundRobin
from lib.transport.kafkabus.clients import KafkaClients, close_quietly
from lib.transport.kafkabus.delivery import BACKOFF_MAX_S, BACKOFF_START_S, DELIVERY_TIMEOUT_S, deliver
from lib.transport.kafkabus.records import pack_messages, record_messages
from lib.transport.kafkabus.topics import TopicMaker, subscription_pattern
from lib.transport.packing import SHIFT

log = logging.getLogger(__name__)

# How long the broker may hold a fetch that finds nothing new. With kafka-python's 500 ms default
# the pipeline over Tansu had p50 0.80 s and p99 1.2 s at 20,000 readings/s; with 100 ms, 0.63 s
# and 0.93 s (50 ms: no better, more broker CPU): waits seem to add up at the two consumer hops.
FETCH_MAX_WAIT_MS = 100


class _Rebalance(ConsumerRebalanceListener):
    """Logs which partitions (sensors) this worker gains and loses."""

    def on_partitions_revoked(self, revoked):
        if revoked:
            log.info(
                "pid %d: partitions revoked: %s",
                os.getpid(),
                ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked)),
            )

    def on_partitions_assigned(self, assigned):
        log.info(
            "pid %d: partitions assigned: %s",
            os.getpid(),
            ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)) or "none",
        )


class KafkaGroupConsumer(Consumer):
    def __init__(self, clients: KafkaClients, group: str, topics: Sequence[str], sensors: bool):
        self.clients, self.group = clients, group
        self._maker = TopicMaker(clients)
        if topics:
            # Internal topics exist before the first join, so the group does not rebalance again
            # as each one appears.
            try:
                self._maker.ensure(topics)
            except KafkaError as exc:
                log.info("could not create topics %s yet (%s); they are created on first use", ", ".join(topics), exc)
                self._maker.reset()
        self._consumer = self._connect(group, topics, sensors)
        self._history = None
        self._outputs = None
        self._last: dict = {}  # TopicPartition -> last offset polled
        self._committed: dict = {}  # TopicPartition -> offset this process committed last
        self._moved: set[str] = set()
        self._per_record = 50.0  # messages per record lately, to size polls and history reads

    def _connect(self, group, topics, sensors):
        s = self.clients.settings
        pattern = subscription_pattern(topics, sensors)
        warned = False
        while True:
            try:
                c = KafkaConsumer(
                    **self.clients.client(),
                    group_id=group,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    max_poll_interval_ms=s.max_poll_interval_ms,
                    # Producers create topics (with [transport] partitions); a consumer asking for
                    # a topic a restarted, empty broker has lost must not create it with defaults.
                    allow_auto_create_topics=False,
                    session_timeout_ms=s.session_timeout_ms,
                    heartbeat_interval_ms=max(100, min(3000, s.session_timeout_ms // 3)),
                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                    # One partition per sensor topic: round-robin spreads topics over the members
                    # (the range assignor would give every topic's partition 0 to one member).
                    partition_assignment_strategy=(RoundRobin,),
                )
                break
            except KafkaError as exc:
                if not warned:
                    log.warning("Kafka broker %s unreachable (%s); retrying", ",".join(self.clients.bootstrap), exc)
                    warned = True
                time.sleep(1.0)
        c.subscribe(pattern=pattern, listener=_Rebalance())
        log.info("group %s on %s, topics matching %s", group, ",".join(self.clients.bootstrap), pattern)
        return c

    def _join_wait_ms(self, timeout_ms: int) -> int:
        """Work around a kafka-python 3.0.12 race: when a poll's timer expires while a rebalance that
        metadata triggered (a new topic) is in flight, the next poll can find nothing to rejoin and
        never apply the assignment it got, leaving the member silent with no partitions for good.
        So while a join is pending: keep the "rejoin needed" flag set until the join is applied,
        and give the poll long enough to see the join through (Tansu answers after about half the
        session timeout; Apache Kafka as soon as every member has rejoined)."""
        coord = getattr(self._consumer, "_coordinator", None)
        try:
            pending = coord is not None and (coord._join_task is not None or coord.need_rejoin())
        except AttributeError:
            return timeout_ms
        if not pending:
            return timeout_ms
        coord.rejoin_needed = True
        s = self.clients.settings
        return max(timeout_ms, min(s.max_poll_interval_ms, 2 * s.session_timeout_ms))

    def poll(self, max_records: int = 1000, timeout: float = 0.5) -> list[Message]:
        """Whole records only, so committed offsets fall on record boundaries: `max_records` is a
        soft limit. kafka-python counts records, so records are asked for a few at a time, sized by
        how many messages a record held lately (a guess on the high side at first: asking for too
        few costs another round, too many overshoots)."""
        timeout_ms = self._join_wait_ms(int(timeout * 1000))
        out: list[Message] = []
        while len(out) < max_records:
            want = max(1, int((max_records - len(out)) / self._per_record))
            records = self._consumer.poll(timeout_ms=timeout_ms if not out else 0, max_records=want)
            got, n = len(out), 0
            for tp, recs in records.items():
                if not recs:
                    continue
                last = self._last.get(tp)
                if last is not None and recs[0].offset != last + 1:
                    # Others handled this partition in between (a rebalance), or it was re-read:
                    # a window kept in memory for it may be stale.
                    self._moved.add(tp.topic)
                self._last[tp] = recs[-1].offset
                n += len(recs)
                for r in recs:
                    out.extend(record_messages(r))
            if not n:
                break
            self._per_record = max(1.0, 0.5 * self._per_record + 0.5 * (len(out) - got) / n)
            if n < want:
                break  # nothing more buffered: what there is now is the poll
        return out

    def owned_sensors(self) -> set[str]:
        """Topics this member is assigned now (lib.detect.detection's no-data rule asks: a sensor handed to
        another worker is not silent)."""
        return {tp.topic for tp in self._consumer.assignment()}

    def moved(self) -> set[str]:
        found, self._moved = self._moved, set()
        return found

    def commit(self, outputs: Sequence[Message] = ()) -> None:
        if outputs:
            self._produce(outputs)
        assigned = self._consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(last + 1, "", -1)
            for tp, last in self._last.items()
            if tp in assigned and self._committed.get(tp) != last + 1
        }
        if not offsets:
            return
        try:
            if self._cluster_went_back(offsets):
                return
            self._consumer.commit(offsets)
        except KafkaError as exc:
            # The work is done and stored; the next commit covers it, or the partition's new owner
            # re-reads it (idempotent downstream).
            log.warning("offset commit failed (%s); will be covered by a later commit or re-read", exc)
            return
        for tp, om in offsets.items():
            self._committed[tp] = om.offset

    def _cluster_went_back(self, offsets) -> bool:
        """True (after re-positioning) when the group's committed offsets are behind what this process
        committed: the broker came back empty (a new cluster) or someone reset the group."""
        ours = {tp: self._committed[tp] for tp in offsets if tp in self._committed}
        if not ours:
            return False
        theirs = self._consumer._coordinator.fetch_committed_offsets(list(ours), timeout_ms=10000)
        behind = [tp for tp, off in ours.items() if tp not in theirs or theirs[tp] is None or theirs[tp].offset < off]
        if not behind:
            return False
        assigned = self._consumer.assignment()
        log.warning(
            "group %s: committed offsets went back (a new or emptied cluster?): re-reading %d "
            "partition(s) from what the cluster has; downstream writes are idempotent",
            self.group,
            len(assigned),
        )
        all_committed = self._consumer._coordinator.fetch_committed_offsets(list(assigned), timeout_ms=10000)
        for tp in assigned:
            c = all_committed.get(tp)
            if c is None or c.offset is None or c.offset < 0:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, c.offset)
            self._committed.pop(tp, None)
            self._last.pop(tp, None)
        return True

    def _produce(self, outputs: Sequence[Message]) -> None:
        """Outputs (states) must be acknowledged before the offsets that produced them are committed;
        retried until the broker takes them."""
        warned = False
        backoff = BACKOFF_START_S
        records = pack_messages(outputs, self.clients.batch)
        while True:
            try:
                if self._outputs is None:
                    self._outputs = self.clients.kafka_producer()
                acked = deliver(self._outputs, self._maker, records, timeout_s=DELIVERY_TIMEOUT_S)
                # Only what failed is sent again; a topic and key has one record per round, so
                # order per sensor holds.
                records = [r for r, ok in zip(records, acked) if not ok]
                if not records:
                    if warned:
                        log.warning("broker reachable again; outputs delivered")
                    return
                error = "not acknowledged"
            except Exception as exc:  # broker or network failure: retry with a fresh client
                error = exc
            if not warned:
                log.warning(
                    "Kafka broker unreachable (%s): holding %d output record(s) until it is back", error, len(records)
                )
                warned = True
            close_quietly(self._outputs, "producer", timeout=0)
            self._outputs = None
            self._maker.reset()
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def history(self, message: Message, n: int) -> list[Message]:
        if n <= 0 or message.offset <= 0:
            return []
        warned = False
        while True:
            try:
                return self._read_history(message, n)
            except KafkaError as exc:
                # No judging without the window: wait for the broker rather than start "initializing".
                if not warned:
                    log.warning(
                        "Kafka broker unreachable (%s) while rebuilding %s's window; retrying", exc, message.topic
                    )
                    warned = True
                close_quietly(self._history, "history consumer")
                self._history = None
                time.sleep(1.0)

    def _read_history(self, message: Message, n: int) -> list[Message]:
        """Reads records backwards from the one holding `message`, a span at a time (doubling),
        until `n` earlier messages are found or the partition's start is reached."""
        if self._history is None:
            self._history = KafkaConsumer(
                **self.clients.client(),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
            )
        hc = self._history
        tp = TopicPartition(message.topic, message.partition)
        hc.assign([tp])
        begin = hc.beginning_offsets([tp], timeout_ms=10000)[tp]
        end = hc.end_offsets([tp], timeout_ms=10000)[tp]
        # Records [lo, hi) are read; hi - 1 holds `message` (unless a broker that came back empty
        # no longer has it).
        hi = min((message.offset >> SHIFT) + 1, end)
        span = int(n / self._per_record) + 2
        found: list[Message] = []
        while hi > begin:
            lo = max(begin, hi - span)
            found[:0] = [m for m in self._read_records(hc, tp, lo, hi) if m.offset < message.offset]
            if len(found) >= n:
                break
            hi, span = lo, span * 2
        return found[-n:]

    @staticmethod
    def _read_records(hc, tp: TopicPartition, lo: int, hi: int) -> list[Message]:
        """The messages of records lo..hi-1 of one partition (fewer if some are gone)."""
        hc.seek(tp, lo)
        found: list[Message] = []
        deadline = time.monotonic() + 30.0
        while hc.position(tp) < hi and time.monotonic() < deadline:
            for r in hc.poll(timeout_ms=500, max_records=max(1, hi - lo)).get(tp, []):
                if r.offset < hi:
                    found.extend(record_messages(r))
        return found

    def close(self) -> None:
        close_quietly(self._history, "history consumer")
        close_quietly(self._outputs, "producer")
        self._maker.reset()
        self._consumer.close(autocommit=False)
