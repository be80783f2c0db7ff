"""The Kafka transport (kafka-python): the same producer, detectors and store across many boards,
worker processes and machines, on any Kafka-protocol broker.

- Producing: readings go to their sensor's topic, keyed by the sensor (one partition per sensor,
  so its order holds). Everything passes through a local durable spool (`lib.transport.spool`) and leaves it
  only once the broker acknowledged it (acks=all, idempotent producer), so a broker outage costs no
  reading. Missing topics are created with `[transport] partitions`.
- Records: a delivery round sends one record per topic and key holding all of its messages
  (kafka-python's per-record cost was most of the transport's time at 20,000 readings/s):
  header `vigie-batch: 1`, key = the sensor, value = a JSON object, column by column
  (`lib.transport.packing`): {"k": key, "v": [value texts], "hc": {header: value shared by all},
  "hv": {header: [one value per message]}} (or "h": [headers] when header names differ), the
  message timestamp the last reading's receive time. A lone message is a plain record, the seed's
  format: value = the reading as UTF-8 text, headers `session`, `seq`, `ts_us`, timestamp = receive
  time; `[transport] kafka_batch = false` sends every message that way. Consumers read both.
  A consumed message's offset is (Kafka offset << SHIFT) + its index in the record, so offsets
  keep increasing; a poll returns whole records, so committed offsets fall between records.
- Consuming: a consumer group subscribed to a pattern (every sensor topic, plus the internal
  topics asked for), partitions spread round-robin so a second worker takes half of the sensors.
  Offsets are committed by hand, after the work is done (`commit`). `history` re-reads the
  records before one from its partition, backwards, so a worker that takes a sensor over rebuilds
  its window instead of starting "initializing" again.
- A broker that comes back empty (a new cluster, or Tansu's memory storage) has lost topics and
  committed offsets: positions past the new log end are reset to the earliest offset, and before
  each commit the group's committed offsets are checked against ours; if they went back, the
  consumer re-reads from what the cluster has. Replays are harmless downstream (primary keys).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.abstract import ConsumerProtocolAssignment
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from lib.transport.spool import Batch, DeliveryLock, Spool
from lib.transport.base import Consumer, Message, Producer, Transport
from lib.transport.packing import MAX_MESSAGES, SHIFT, encode, merge, unpack

log = logging.getLogger(__name__)

# Sensor topics (see lib.ingest.protocol.valid_topic: no "_vigie" or "__" prefix), for pattern subscriptions.
SENSOR_PATTERN = r"(?!_vigie|__)[A-Za-z0-9._-]+"
# Messages per delivery round: under a backlog a round merges each topic's spool rows into records
# of up to RECORD_MAX_BYTES, which stays under the broker's and kafka-python's 1 MB defaults.
DELIVERY_BATCH = 20_000
RECORD_MAX_BYTES = 512 * 1024
# A caught-up delivery thread starts a round at most this often: a reading may wait this long in
# the spool, and a record carries about this long's readings of its sensor. 0.25 s rather than
# 0.1 s: the broker's CPU fell from 23 to 14 us a reading (it shares the cores) for no change in
# the pipeline's p50 and p99 (issue 8).
DELIVERY_INTERVAL_S = 0.25
BATCH_HEADER, BATCH_VERSION = "vigie-batch", b"1"
# How long the broker may hold a fetch that finds nothing new. With kafka-python's 500 ms default
# the pipeline over Tansu had p50 0.80 s and p99 1.2 s at 20,000 readings/s; with 100 ms, 0.63 s
# and 0.93 s (50 ms: no better, more broker CPU): waits seem to add up at the two consumer hops.
FETCH_MAX_WAIT_MS = 100
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 5.0
OUTAGE_WARN_EVERY_S = 10.0
# How long a batch may wait for the broker's acknowledgements before the broker counts as unreachable.
DELIVERY_TIMEOUT_S = 10.0


def subscription_pattern(topics: Sequence[str], sensors: bool) -> str:
    parts = [re.escape(t) for t in topics]
    if sensors:
        parts.append(SENSOR_PATTERN)
    if not parts:
        raise ValueError("a consumer needs topics or sensors")
    return "^(?:" + "|".join(parts) + ")$"


class _NoConnectionNoise(logging.Filter):
    """Drops kafka-python's per-attempt connection errors (several a second during an outage)."""
    MARKERS = ("KafkaConnectionError", "ECONNREFUSED", "NodeNotReady", "NoBrokersAvailable",
               "Unable to bootstrap", "socket disconnected", "Marking the coordinator dead")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is kafka-python's to report, not ours to hide
            return True
        return not any(m in text for m in self.MARKERS)


def _quiet_kafka_logs() -> None:
    # kafka-python logs every refused connection at ERROR, several times a second during an
    # outage; the spool and the consumers say it once, clearly, instead.
    if os.environ.get("VIGIE_LOG_LEVEL", "").upper() != "DEBUG":
        for name in ("kafka.net", "kafka.conn", "kafka.client_async", "kafka.cluster"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        for name in ("kafka.coordinator", "kafka.coordinator.consumer", "kafka.coordinator.heartbeat",
                     "kafka.consumer.fetcher", "kafka.producer.sender", "kafka.producer.kafka"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _NoConnectionNoise) for f in logger.filters):
                logger.addFilter(_NoConnectionNoise())


@dataclass(slots=True)
class OutRecord:
    """One Kafka record to send: a single message (the seed's format) or a batch (`vigie-batch`
    header, value = lib.transport.packing's JSON). `first_id`: the first spool row it carries."""
    topic: str
    key: str | None
    value: str
    headers: list
    timestamp_ms: int | None
    first_id: int = 0


def plain_record(m: Message, first_id: int = 0) -> OutRecord:
    ts_us = m.headers.get("ts_us")
    return OutRecord(m.topic, m.key, m.value, [(k, str(v).encode()) for k, v in m.headers.items()],
                     int(ts_us) // 1000 if ts_us else None, first_id)


def batch_record(topic: str, key: str | None, body: str, ts_ms: int | None, first_id: int = 0) -> OutRecord:
    return OutRecord(topic, key, body, [(BATCH_HEADER, BATCH_VERSION)], ts_ms, first_id)


def pack_messages(messages: Sequence[Message], batch: bool = True) -> list[OutRecord]:
    """Records for `messages`: with `batch`, one per topic and key (a lone message stays a plain
    record, readable as the seed's); otherwise one per message."""
    if not batch:
        return [plain_record(m) for m in messages]
    groups: dict[tuple, list[Message]] = {}
    for m in messages:
        groups.setdefault((m.topic, m.key), []).append(m)
    out = []
    for (topic, key), msgs in groups.items():
        if len(msgs) == 1:
            out.append(plain_record(msgs[0]))
            continue
        for i in range(0, len(msgs), MAX_MESSAGES):
            part = msgs[i:i + MAX_MESSAGES]
            ts_us = part[-1].headers.get("ts_us")
            out.append(batch_record(topic, key, encode(part), int(ts_us) // 1000 if ts_us else None))
    return out


def pack_spool(rows: Sequence[Batch], batch: bool = True) -> list[OutRecord]:
    """Records for spool rows, in order per topic and key. With `batch`, a topic's consecutive rows
    are merged into one record up to RECORD_MAX_BYTES (a single row is sent as stored, without
    decoding it); otherwise every message is a plain record."""
    groups: dict[tuple, list[Batch]] = {}
    for r in rows:
        groups.setdefault((r.topic, r.key), []).append(r)
    out: list[OutRecord] = []
    for (topic, key), group in groups.items():
        if not batch:
            out.extend(plain_record(m, r.id) for r in group for m in r.messages())
            continue
        chunk: list[Batch] = []
        size = n = 0
        for r in [*group, None]:
            if chunk and (r is None or size + len(r.body) > RECORD_MAX_BYTES or n + r.n > MAX_MESSAGES):
                out.append(_chunk_record(topic, key, chunk))
                chunk, size, n = [], 0, 0
            if r is not None:
                chunk.append(r)
                size += len(r.body)
                n += r.n
    return out


def _chunk_record(topic: str, key: str | None, chunk: list[Batch]) -> OutRecord:
    first, last = chunk[0], chunk[-1]
    if len(chunk) == 1 and first.n == 1:
        return plain_record(first.messages()[0], first.id)
    body = first.body if len(chunk) == 1 else merge([r.body for r in chunk])
    return batch_record(topic, key, body, last.ts_ms, first.id)


def record_messages(r) -> list[Message]:
    """The messages a consumed record holds, offsets (Kafka offset << SHIFT) + index."""
    headers = r.headers or []
    for name, version in headers:
        if name == BATCH_HEADER:
            if version != BATCH_VERSION:
                raise RuntimeError(f"{r.topic}[{r.partition}] offset {r.offset}: batch format "
                                   f"{version.decode(errors='replace')!r}, this Vigie reads {BATCH_VERSION.decode()!r}; "
                                   "upgrade this worker")
            try:
                return unpack(r.topic, r.value, r.partition, r.offset)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping malformed batch record %s[%d] offset %d: %s", r.topic, r.partition, r.offset, exc)
                return []
    return [Message(r.topic, r.key.decode() if r.key is not None else None,
                    r.value.decode() if r.value is not None else "",
                    {k: v.decode() for k, v in headers}, r.partition, r.offset << SHIFT)]


class KafkaTransport(Transport):
    def __init__(self, config):
        _quiet_kafka_logs()
        self.config = config
        t = config.transport
        self.settings = t
        self.bootstrap = [s.strip() for s in t.bootstrap_servers.split(",") if s.strip()]
        self.spool_path = config.data_dir / "spool" / "outbox.sqlite"
        self.client_id = f"vigie-{os.getpid()}"
        self.batch = t.kafka_batch

    def common(self) -> dict:
        return {"bootstrap_servers": self.bootstrap, "client_id": self.client_id,
                "reconnect_backoff_max_ms": 1000, "metadata_max_age_ms": self.settings.metadata_max_age_ms,
                "request_timeout_ms": 15000, "bootstrap_timeout_ms": 5000}

    def client(self) -> dict:
        """`common` plus what producers and consumers take: no kafka-python metrics (Vigie never
        reads them; recording them was about 1.5% of the store's py-spy samples, issue 8)."""
        return {**self.common(), "metrics_enabled": False}

    def kafka_producer(self):
        return KafkaProducer(**self.client(), acks="all", enable_idempotence=True, linger_ms=5,
                             batch_size=256 * 1024, max_block_ms=10000, delivery_timeout_ms=30000)

    def topic_maker(self) -> "TopicMaker":
        return TopicMaker(self)

    def producer(self) -> "SpooledProducer":
        return SpooledProducer(self)

    def consumer(self, group: str, topics: Sequence[str] = (), sensors: bool = False) -> "KafkaGroupConsumer":
        return KafkaGroupConsumer(self, group, topics, sensors)


class TopicMaker:
    """Creates missing topics with the configured partitions before the first record goes to them."""

    def __init__(self, transport: KafkaTransport):
        self.transport = transport
        self.known: set[str] = set()
        self._admin = None

    def ensure(self, topics: Iterable[str]) -> None:
        missing = sorted(set(topics) - self.known)
        if not missing:
            return
        s = self.transport.settings
        for name in missing:
            try:
                self.admin().create_topics([NewTopic(name, s.partitions, s.replication_factor)])
                log.info("created topic %s (%d partition(s))", name, s.partitions)
            except TopicAlreadyExistsError:
                pass
            self.known.add(name)

    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.transport.common())
        return self._admin

    def reset(self) -> None:
        """After an outage the broker may be a new, empty cluster: check every topic again."""
        self.known.clear()
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # closing a broken client must not hide the outage being handled
                log.debug("closing admin client", exc_info=True)
            self._admin = None


def deliver(kafka_producer, maker: TopicMaker, records: Sequence[OutRecord], timeout_s: float,
            ends: dict | None = None) -> list[bool]:
    """Send records in order and wait for the broker's acknowledgements; returns, per record,
    whether it was acknowledged. `ends` collects {(topic, partition): offset after the last
    acknowledged record}."""
    maker.ensure({r.topic for r in records})
    futures = [kafka_producer.send(r.topic, key=r.key.encode() if r.key is not None else None, value=r.value.encode(),
                                   headers=r.headers, timestamp_ms=r.timestamp_ms) for r in records]
    kafka_producer.flush(timeout=timeout_s)
    acked = []
    for f in futures:
        ok = f.is_done and not f.failed()
        acked.append(ok)
        if ok and ends is not None:
            md = f.value
            key = (md.topic, md.partition)
            ends[key] = max(ends.get(key, 0), md.offset + 1)
    return acked


def cluster_lost_records(transport: KafkaTransport, maker: TopicMaker, ends: dict) -> bool:
    """True when the broker no longer has records it acknowledged: a topic or partition is gone, or
    its log ends before them (a new or emptied cluster)."""
    topics = {t for t, _ in ends}
    if topics - set(maker.admin().list_topics()):
        return True
    probe = KafkaConsumer(**transport.client(), group_id=None, enable_auto_commit=False,
                          allow_auto_create_topics=False)
    try:
        tps = [TopicPartition(t, p) for t, p in ends]
        found = probe.end_offsets(tps, timeout_ms=5000)
    except KafkaTimeoutError:
        return True   # a partition that no longer exists
    finally:
        probe.close()
    return any(found.get(tp, 0) < ends[(tp.topic, tp.partition)] for tp in tps)


class SpooledProducer(Producer):
    """`send` queues, `flush` makes the records durable in the local spool (and wakes the delivery
    thread), the delivery thread moves them to the broker in order."""

    def __init__(self, transport: KafkaTransport):
        self.transport = transport
        s = transport.settings
        self.spool = Spool(transport.spool_path, s.spool_max_bytes)
        self._pending: list[Message] = []
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = DeliveryLock(transport.spool_path)
        self._refused_logged = 0
        self._thread = threading.Thread(target=self._deliver_loop, daemon=True, name="kafka-delivery")
        self._thread.start()

    def send(self, messages: Iterable[Message]) -> None:
        self._pending.extend(messages)

    def flush(self) -> None:
        if not self._pending:
            return
        refused = self.spool.append(self._pending)
        self._pending.clear()
        if refused:
            n, used = self.spool.pending()
            log.error("SPOOL FULL (%d messages, %.1f MB of [transport] spool_max_bytes %.1f MB) while the broker "
                      "is unreachable: %d message(s) just refused and LOST. Bring the broker back or raise "
                      "spool_max_bytes.", n, used / 1e6, self.spool.max_bytes / 1e6, refused)
        self._wake.set()

    # -- delivery -----------------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        spool = Spool(self.transport.spool_path, self.transport.settings.spool_max_bytes)
        maker = TopicMaker(self.transport)
        kp = None
        backoff = BACKOFF_START_S
        outage_since: float | None = None
        last_warn = 0.0
        acked_ends: dict = {}     # (topic, partition) -> offset after what the broker acknowledged
        check_lost = False        # after a failure: did the broker come back without those records?
        try:
            while True:
                if not self._lock.try_acquire():
                    # Another process on this data folder delivers the spool (ours included).
                    if self._closing.is_set():
                        return
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                round_started = time.monotonic()
                rows = spool.peek(DELIVERY_BATCH)
                if not rows:
                    if self._closing.is_set():
                        return
                    # Other processes may append too: look again soon even without a wake-up.
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                try:
                    if kp is None:
                        kp = self.transport.kafka_producer()
                    if check_lost:
                        if acked_ends and cluster_lost_records(self.transport, maker, acked_ends):
                            n = spool.requeue_retained()
                            log.warning("the broker came back without records it had acknowledged (a new or "
                                        "emptied cluster): sending the %d message(s) of the last %.0f s again, in "
                                        "order (duplicates are harmless downstream)", n, spool.retain_s)
                            rows = spool.peek(DELIVERY_BATCH)
                        acked_ends.clear()
                        check_lost = False
                    records = pack_spool(rows, self.transport.batch)
                    acked = deliver(kp, maker, records, DELIVERY_TIMEOUT_S, acked_ends)
                except Exception as exc:  # any broker or network failure: the rows stay spooled
                    acked, error = [], exc
                    up_to = rows[0].id - 1
                else:
                    error = None
                    # Rows before the first unacknowledged record's first row are all delivered (a
                    # record after it that did go through is sent again later: a harmless duplicate).
                    failed = [r.first_id for r, ok in zip(records, acked) if not ok]
                    up_to = min(failed) - 1 if failed else rows[-1].id
                if up_to >= rows[0].id:
                    spool.ack(up_to)
                if up_to == rows[-1].id:
                    if outage_since is not None:
                        n, _ = spool.pending()
                        log.warning("broker reachable again after %.0f s; delivering the spool in order "
                                    "(%d message(s) left)", time.monotonic() - outage_since, n)
                        outage_since = None
                    backoff = BACKOFF_START_S
                    if sum(r.n for r in rows) < DELIVERY_BATCH:
                        # Caught up: let the next round gather a little more, so that each record
                        # carries more readings (kafka-python's cost is per record and per round).
                        self._closing.wait(DELIVERY_INTERVAL_S - (time.monotonic() - round_started))
                    continue
                check_lost = True
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                if now - last_warn >= OUTAGE_WARN_EVERY_S:
                    last_warn = now
                    n, used = spool.pending()
                    log.warning("Kafka broker %s unreachable (%s): readings are kept in the local spool %s "
                                "(%d message(s), %.1f MB of %.0f MB) and will be delivered in order when it is back",
                                ",".join(self.transport.bootstrap), error or "not acknowledged", spool.path,
                                n, used / 1e6, spool.max_bytes / 1e6)
                # Start over with a fresh client: the broker may come back as a new, empty cluster.
                if kp is not None:
                    try:
                        kp.close(timeout=0)
                    except Exception:
                        log.debug("closing producer", exc_info=True)
                    kp = None
                maker.reset()
                if self._closing.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        except Exception:
            log.exception("spool delivery thread failed; records stay in %s", spool.path)
        finally:
            if kp is not None:
                try:
                    kp.close(timeout=5)
                except Exception:
                    log.debug("closing producer", exc_info=True)
            maker.reset()
            spool.close()

    def close(self, drain_timeout: float = 10.0) -> None:
        """Flush, give delivery `drain_timeout` seconds to empty the spool, then stop. Whatever is
        left stays in the spool for the next process."""
        self.flush()
        deadline = time.monotonic() + drain_timeout
        while self._lock.held and self.spool.pending()[0] and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=drain_timeout + 5)
        n, _ = self.spool.pending()
        if n:
            log.warning("%d message(s) still in the spool %s: the next producer on this data folder delivers them",
                        n, self.spool.path)
        self._lock.close()
        self.spool.close()


class RoundRobin(RoundRobinPartitionAssignor):
    """kafka-python 3.0.12's round-robin assignor with its skip loop fixed: when members' subscriptions
    differ (one has not seen a new topic yet, or sees none after a broker restart) the original
    assigns a (group_instance_id, member_id) pair as a member id and the leader crashes with a
    KeyError, leaving the group without a leader. Same protocol name, same assignment otherwise."""

    @classmethod
    def assign(cls, cluster, members):
        topics = sorted({t for m in members for t in m.metadata.topics})
        partitions = []
        for topic in topics:
            found = cluster.partitions_for_topic(topic)
            if found is None:
                log.warning("no partition metadata for topic %s", topic)
                continue
            partitions.extend(TopicPartition(topic, p) for p in found)
        partitions.sort()
        static = sorted(m.member_id for m in members if m.group_instance_id is not None)
        dynamic = sorted(m.member_id for m in members if m.group_instance_id is None)
        order = static + dynamic
        subscribed = {m.member_id: set(m.metadata.topics) for m in members}
        assignment = {m: {} for m in order}
        i = 0
        for tp in partitions:
            for _ in range(len(order)):
                member = order[i % len(order)]
                i += 1
                if tp.topic in subscribed[member]:
                    assignment[member].setdefault(tp.topic, []).append(tp.partition)
                    break
        return {m: ConsumerProtocolAssignment(cls.version, sorted(assignment[m].items()), b"") for m in order}


class _Rebalance(ConsumerRebalanceListener):
    """Logs which partitions (sensors) this worker gains and loses."""

    def on_partitions_revoked(self, revoked):
        if revoked:
            log.info("pid %d: partitions revoked: %s", os.getpid(), ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked)))

    def on_partitions_assigned(self, assigned):
        log.info("pid %d: partitions assigned: %s", os.getpid(),
                 ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)) or "none")


class KafkaGroupConsumer(Consumer):
    def __init__(self, transport: KafkaTransport, group: str, topics: Sequence[str], sensors: bool):
        self.transport, self.group = transport, group
        self._maker = TopicMaker(transport)
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
        self._last: dict = {}        # TopicPartition -> last offset polled
        self._committed: dict = {}   # TopicPartition -> offset this process committed last
        self._moved: set[str] = set()
        self._per_record = 50.0      # messages per record lately, to size polls and history reads

    def _connect(self, group, topics, sensors):
        s = self.transport.settings
        pattern = subscription_pattern(topics, sensors)
        warned = False
        while True:
            try:
                c = KafkaConsumer(
                    **self.transport.client(), group_id=group, enable_auto_commit=False,
                    auto_offset_reset="earliest", max_poll_interval_ms=s.max_poll_interval_ms,
                    # Producers create topics (with [transport] partitions); a consumer asking for
                    # a topic a restarted, empty broker has lost must not create it with defaults.
                    allow_auto_create_topics=False,
                    session_timeout_ms=s.session_timeout_ms,
                    heartbeat_interval_ms=max(100, min(3000, s.session_timeout_ms // 3)),
                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                    # One partition per sensor topic: round-robin spreads topics over the members
                    # (the range assignor would give every topic's partition 0 to one member).
                    partition_assignment_strategy=(RoundRobin,))
                break
            except KafkaError as exc:
                if not warned:
                    log.warning("Kafka broker %s unreachable (%s); retrying", ",".join(self.transport.bootstrap), exc)
                    warned = True
                time.sleep(1.0)
        c.subscribe(pattern=pattern, listener=_Rebalance())
        log.info("group %s on %s, topics matching %s", group, ",".join(self.transport.bootstrap), pattern)
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
        s = self.transport.settings
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
                break     # nothing more buffered: what there is now is the poll
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
        offsets = {tp: OffsetAndMetadata(last + 1, "", -1) for tp, last in self._last.items()
                   if tp in assigned and self._committed.get(tp) != last + 1}
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
        log.warning("group %s: committed offsets went back (a new or emptied cluster?): re-reading %d "
                    "partition(s) from what the cluster has; downstream writes are idempotent", self.group, len(assigned))
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
        records = pack_messages(outputs, self.transport.batch)
        while True:
            try:
                if self._outputs is None:
                    self._outputs = self.transport.kafka_producer()
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
                log.warning("Kafka broker unreachable (%s): holding %d output record(s) until it is back", error, len(records))
                warned = True
            if self._outputs is not None:
                try:
                    self._outputs.close(timeout=0)
                except Exception:
                    log.debug("closing producer", exc_info=True)
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
                    log.warning("Kafka broker unreachable (%s) while rebuilding %s's window; retrying",
                                exc, message.topic)
                    warned = True
                if self._history is not None:
                    try:
                        self._history.close()
                    except Exception:
                        log.debug("closing history consumer", exc_info=True)
                    self._history = None
                time.sleep(1.0)

    def _read_history(self, message: Message, n: int) -> list[Message]:
        """Reads records backwards from the one holding `message`, a span at a time (doubling),
        until `n` earlier messages are found or the partition's start is reached."""
        if self._history is None:
            self._history = KafkaConsumer(**self.transport.client(), group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="earliest", allow_auto_create_topics=False)
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
        for c in (self._history, self._outputs):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    log.debug("closing client", exc_info=True)
        self._maker.reset()
        self._consumer.close(autocommit=False)
