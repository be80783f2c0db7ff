"""Producing to Kafka through the local spool: `SpooledProducer` makes a flush durable in the
spool (`lib.transport.spool`), and a delivery thread (`SpoolDelivery`) moves the spool's rows to
the broker in order, acknowledging them in the spool only once the broker has (acks=all,
idempotent producer). A broker outage costs no reading: the rows wait, and a warning says so every
OUTAGE_WARN_EVERY_S."""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Sequence

from lib.messages import Message
from lib.transport.base import Producer
from lib.transport.kafkabus.clients import KafkaClients, close_quietly
from lib.transport.kafkabus.records import OutRecord, pack_spool
from lib.transport.kafkabus.topics import TopicMaker, cluster_lost_records
from lib.transport.spool import Batch, DeliveryLock, Spool

log = logging.getLogger(__name__)

# Messages per delivery round: under a backlog a round merges each topic's spool rows into records
# of up to records.RECORD_MAX_BYTES.
DELIVERY_BATCH = 20_000
# A caught-up delivery thread starts a round at most this often: a reading may wait this long in
# the spool, and a record carries about this long's readings of its sensor. 0.25 s rather than
# 0.1 s: the broker's CPU fell from 23 to 14 us a reading (it shares the cores) for no change in
# the pipeline's p50 and p99 (bench/bench_pipeline.py over Kafka at 20,000 readings/s).
DELIVERY_INTERVAL_S = 0.25
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 5.0
OUTAGE_WARN_EVERY_S = 10.0
# How long a batch may wait for the broker's acknowledgements before the broker counts as unreachable.
DELIVERY_TIMEOUT_S = 10.0


def deliver(
    kafka_producer, maker: TopicMaker, records: Sequence[OutRecord], timeout_s: float, ends: dict | None = None
) -> list[bool]:
    """Send records in order and wait for the broker's acknowledgements; returns, per record,
    whether it was acknowledged. `ends` collects {(topic, partition): offset after the last
    acknowledged record}."""
    maker.ensure({r.topic for r in records})
    futures = [
        kafka_producer.send(
            r.topic,
            key=r.key.encode() if r.key is not None else None,
            value=r.value.encode(),
            headers=r.headers,
            timestamp_ms=r.timestamp_ms,
        )
        for r in records
    ]
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


class SpooledProducer(Producer):
    """`send` queues, `flush` makes the records durable in the local spool (and wakes the delivery
    thread), the delivery thread moves them to the broker in order."""

    def __init__(self, clients: KafkaClients):
        self.clients = clients
        s = clients.settings
        self.spool = Spool(clients.spool_path, s.spool_max_bytes)
        self._pending: list[Message] = []
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = DeliveryLock(clients.spool_path)
        delivery = SpoolDelivery(clients, self._lock, self._wake, self._closing)
        self._thread = threading.Thread(target=delivery.run, daemon=True, name="kafka-delivery")
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
            log.error(
                "SPOOL FULL (%d messages, %.1f MB of [transport] spool_max_bytes %.1f MB) while the broker "
                "is unreachable: %d message(s) just refused and LOST. Bring the broker back or raise "
                "spool_max_bytes.",
                n,
                used / 1e6,
                self.spool.max_bytes / 1e6,
                refused,
            )
        self._wake.set()

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
            log.warning(
                "%d message(s) still in the spool %s: the next producer on this data folder delivers them",
                n,
                self.spool.path,
            )
        self._lock.close()
        self.spool.close()


class SpoolDelivery:
    """The delivery thread's work: rounds of (take the oldest waiting rows, send them as records,
    acknowledge in the spool what the broker acknowledged), in order. After a failed round it
    starts over with a fresh client after a backoff, and first checks whether the broker came back
    without records it had acknowledged (a new or emptied cluster): if so the spool's recently
    acknowledged rows go again. Only the holder of the spool's DeliveryLock delivers."""

    def __init__(self, clients: KafkaClients, lock: DeliveryLock, wake: threading.Event, closing: threading.Event):
        self.clients, self.lock, self.wake, self.closing = clients, lock, wake, closing
        self.spool = Spool(clients.spool_path, clients.settings.spool_max_bytes)
        self.maker = TopicMaker(clients)
        self.kp = None
        self.backoff = BACKOFF_START_S
        self.outage_since: float | None = None
        self.last_warn = 0.0
        self.acked_ends: dict = {}  # (topic, partition) -> offset after what the broker acknowledged
        self.check_lost = False  # after a failure: did the broker come back without those records?

    def run(self) -> None:
        try:
            while self.round():
                pass
        except Exception:
            log.exception("spool delivery thread failed; records stay in %s", self.spool.path)
        finally:
            close_quietly(self.kp, "producer", timeout=5)
            self.maker.reset()
            self.spool.close()

    def round(self) -> bool:
        """One delivery round, or a wait; False when the producer is closing."""
        if not self.lock.try_acquire():
            # Another process on this data folder delivers the spool (ours included).
            return self.idle(1.0)
        started = time.monotonic()
        rows = self.spool.peek(DELIVERY_BATCH)
        if not rows:
            # Other processes may append too: look again soon even without a wake-up.
            return self.idle(0.2)
        rows, up_to, error = self.send(rows)
        if up_to >= rows[0].id:
            self.spool.ack(up_to)
        if up_to < rows[-1].id:
            return self.failed(error)
        self.delivered()
        if sum(r.n for r in rows) < DELIVERY_BATCH:
            # Caught up: let the next round gather a little more, so that each record carries more
            # readings (kafka-python's cost is per record and per round).
            self.closing.wait(DELIVERY_INTERVAL_S - (time.monotonic() - started))
        return True

    def idle(self, seconds: float) -> bool:
        if self.closing.is_set():
            return False
        self.wake.wait(seconds)
        self.wake.clear()
        return True

    def send(self, rows: list[Batch]) -> tuple[list[Batch], int, Exception | None]:
        """Send `rows` (or, when the broker lost what it had acknowledged, the spool's oldest rows
        again); returns the rows sent, the last row id delivered with every row before it, and the
        error if the broker could not be reached."""
        try:
            if self.kp is None:
                self.kp = self.clients.kafka_producer()
            if self.check_lost:
                rows = self.requeue_if_lost(rows)
            records = pack_spool(rows, self.clients.batch)
            acked = deliver(self.kp, self.maker, records, DELIVERY_TIMEOUT_S, self.acked_ends)
        except Exception as exc:  # any broker or network failure: the rows stay spooled
            return rows, rows[0].id - 1, exc
        # Rows before the first unacknowledged record's first row are all delivered (a record
        # after it that did go through is sent again later: a harmless duplicate).
        failed = [r.first_id for r, ok in zip(records, acked) if not ok]
        return rows, (min(failed) - 1 if failed else rows[-1].id), None

    def requeue_if_lost(self, rows: list[Batch]) -> list[Batch]:
        if self.acked_ends and cluster_lost_records(self.clients, self.maker, self.acked_ends):
            n = self.spool.requeue_retained()
            log.warning(
                "the broker came back without records it had acknowledged (a new or emptied cluster): "
                "sending the %d message(s) of the last %.0f s again, in order (duplicates are harmless "
                "downstream)",
                n,
                self.spool.retain_s,
            )
            rows = self.spool.peek(DELIVERY_BATCH)
        self.acked_ends.clear()
        self.check_lost = False
        return rows

    def delivered(self) -> None:
        if self.outage_since is not None:
            n, _ = self.spool.pending()
            log.warning(
                "broker reachable again after %.0f s; delivering the spool in order (%d message(s) left)",
                time.monotonic() - self.outage_since,
                n,
            )
            self.outage_since = None
        self.backoff = BACKOFF_START_S

    def failed(self, error: Exception | None) -> bool:
        """After a round the broker did not fully acknowledge: warn (at most every
        OUTAGE_WARN_EVERY_S), wait the backoff, and start over with a fresh client; False when the
        producer closes meanwhile."""
        self.check_lost = True
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        if now - self.last_warn >= OUTAGE_WARN_EVERY_S:
            self.last_warn = now
            n, used = self.spool.pending()
            log.warning(
                "Kafka broker %s unreachable (%s): readings are kept in the local spool %s "
                "(%d message(s), %.1f MB of %.0f MB) and will be delivered in order when it is back",
                ",".join(self.clients.bootstrap),
                error or "not acknowledged",
                self.spool.path,
                n,
                used / 1e6,
                self.spool.max_bytes / 1e6,
            )
        # Start over with a fresh client: the broker may come back as a new, empty cluster.
        close_quietly(self.kp, "producer", timeout=0)
        self.kp = None
        self.maker.reset()
        if self.closing.wait(self.backoff):
            return False
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        return True
