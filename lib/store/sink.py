"""The store's side of the transport: turn consumed messages into a `Batch`."""

from __future__ import annotations

import logging
import time

import duckdb

from lib.messages import (
    EVENTS,
    LABELS,
    REJECTS,
    SEQ,
    SESSION,
    SESSIONS,
    STATES,
    TRUTH,
    TS_US,
    EventAction,
    Label,
    Message,
    Reject,
    StatesBatch,
    Truth,
    parse_session_event,
    parse_states,
)
from lib.states import CODE_OF_STATE
from lib.store.batch import Batch
from lib.store.files import DatabaseFileError, error_cause, is_corruption
from lib.store.readserver import ReadServer
from lib.store.writer import Writer

log = logging.getLogger(__name__)


def add_message(batch: Batch, msg: Message) -> None:
    """File one message under its table. A message that cannot be understood is logged, not fatal:
    one bad message must not stop every later reading from being stored."""
    try:
        if msg.topic == STATES:
            for part in parse_states(msg):
                if isinstance(part, StatesBatch):  # column by column, as the detectors send them
                    for detector, (states, scores) in part.judged.items():
                        batch.add_states(part.sensor, part.session, part.seq, part.ts_us, detector, states, scores)
                else:  # one reading's states spelled out
                    for detector, state, score in part.states:
                        batch.add_states(
                            part.sensor, part.session, [part.seq], [part.ts_us], detector, CODE_OF_STATE[state], [score]
                        )
        elif msg.topic == REJECTS:
            r = Reject.parse(msg)
            batch.rejects[(r.session, r.seq)] = (r.ts_us, r.reason, r.raw)
        elif msg.topic == SESSIONS:
            batch.sessions.append(parse_session_event(msg))
        elif msg.topic == TRUTH:
            t = Truth.parse(msg)
            batch.truth[(t.run, t.sensor, t.kind, t.start_us)] = t.end_us
        elif msg.topic == LABELS:
            label = Label.parse(msg)
            key = (label.session, label.seq)
            old = batch.labels.get(key)
            if old is None or label.made_us >= old[5]:
                batch.labels[key] = (
                    label.sensor,
                    label.ts_us,
                    label.verdict,
                    label.detector,
                    label.note,
                    label.made_us,
                )
        elif msg.topic == EVENTS:
            p = msg.json()
            if p["type"] == "event":
                old = batch.events.get(p["id"])
                if old is None or p["rev"] >= old["rev"]:
                    batch.events[p["id"]] = p
            elif p["type"] == "action":
                batch.event_actions.append(EventAction.parse(p))
            else:
                raise ValueError(f"unknown event message type {p['type']!r}")
        else:
            # A reading: the hot path (tens of thousands a second), read without an object each.
            h = msg.headers
            batch.readings[(h[SESSION], int(h[SEQ]))] = (msg.topic, int(h[TS_US]), float(msg.value))
    except (KeyError, ValueError, TypeError) as exc:
        log.error("skipping malformed %s message at offset %s: %s", msg.topic, msg.offset, exc)


POLL_SLICE = 2000
# A write's cost is mostly fixed (four statements and a commit): 16 ms for 18 rows, 18 ms for 900,
# 31 ms for 18,000 (median wall time here). Under light load (one board) writing every
# `flush_interval` took 8.6% of a core for writes of a few readings and their states, so a batch
# this small may wait `quiet_flush_interval` instead.
QUIET_ROWS = 1000


def run_store(
    db_path,
    consumer,
    stop,
    flush_interval: float = 0.1,
    max_batch: int = 50_000,
    on_flush=None,
    maintenance=None,
    quiet_flush_interval: float = 0.0,
    queries=None,
) -> int:
    """The single writer's loop: gather messages for `flush_interval` (or `max_batch` rows), write
    them to DuckDB in one transaction, and only then commit the consumer's position (at-least-once;
    primary keys and watermarks make a replay harmless). A batch of fewer than QUIET_ROWS rows
    waits up to `quiet_flush_interval` after its first message (0: no longer than
    `flush_interval`). `maintenance()` runs between batches (retention), in this process because
    it is the only writer. Other processes read through the store's socket, by the names in
    `queries` ({name: function(cursor, ...)}; by default every `readserver.named` function this
    process imported). Returns the number of messages stored."""
    writer = Writer(db_path)
    # The store holds the file for its whole run; the page's queries come to it (lib.store.readserver).
    server = ReadServer(writer.connection, db_path, queries).start()
    try:
        return _store_loop(
            writer, consumer, stop, flush_interval, max_batch, on_flush, maintenance, quiet_flush_interval, server
        )
    finally:
        server.close()
        writer.close()


def _store_loop(
    writer, consumer, stop, flush_interval, max_batch, on_flush, maintenance, quiet_flush_interval, server=None
) -> int:
    stored = 0
    while True:
        stopping = stop.is_set()
        batch, n = Batch(), 0
        deadline = time.monotonic() + flush_interval
        first_at = None  # when this batch's first message came
        # `max_batch` bounds the rows (memory and write time); a message may carry many rows (a
        # detector's states for a whole poll), so messages are polled a slice at a time.
        while len(batch) < max_batch:
            remaining = deadline - time.monotonic()
            messages = consumer.poll(
                min(POLL_SLICE, max_batch - len(batch)), max(0.0, remaining) if not stopping else 0.0
            )
            for m in messages:
                add_message(batch, m)
            if messages and first_at is None:
                first_at = time.monotonic()
            n += len(messages)
            if remaining <= 0 or (stopping and not messages):
                if (
                    n
                    and not stopping
                    and len(batch) < QUIET_ROWS
                    and time.monotonic() < first_at + quiet_flush_interval
                ):
                    deadline = first_at + quiet_flush_interval
                    continue
                break
        if n:
            if not write_until_done(writer.path, batch, stop, lambda _path, b: writer.write(b)):
                # Stopping while the disk is still full: the batch stays uncommitted on the
                # transport and the next start writes it.
                return stored
            consumer.commit()
            stored += n
            if on_flush:
                on_flush(n)
        elif stopping:
            # Drained: everything polled before the stop is written and committed.
            return stored
        if maintenance is not None and not stopping:
            maintenance()
        if server is not None and not stopping:
            server.check()


WRITE_BACKOFF_START_S, WRITE_BACKOFF_MAX_S = 0.5, 10.0


def write_until_done(db_path, batch, stop, write) -> bool:
    """`write(db_path, batch)` until it succeeds; True when written, False when a stop came first.

    A full disk or any other I/O error is logged once per outage with what it is, and retried with
    backoff: the batch is not committed on the transport, so nothing is lost while the store waits
    (the transport holds the readings; the store holds at most one batch in memory). A foreign or
    damaged file raises DatabaseFileError, which stops the store."""
    backoff, failed_since, attempts = WRITE_BACKOFF_START_S, None, 0
    while True:
        try:
            write(db_path, batch)
        except (duckdb.Error, OSError) as exc:
            if is_corruption(exc):
                raise DatabaseFileError(f"{db_path} is damaged ({exc}); the store stops without touching it") from exc
            attempts += 1
            if failed_since is None:
                failed_since = time.monotonic()
                what = error_cause(exc) or "write failed"
                log.error(
                    "%s: cannot write %d rows to %s (%s); keeping them on the transport and retrying "
                    "with backoff up to %.0fs",
                    what,
                    len(batch),
                    db_path,
                    exc,
                    WRITE_BACKOFF_MAX_S,
                )
            else:
                log.debug("write retry %d failed: %s", attempts, exc)
            if stop.wait(backoff):
                log.warning("stopping with %d rows unwritten (%s); they stay on the transport", len(batch), exc)
                return False
            backoff = min(backoff * 2, WRITE_BACKOFF_MAX_S)
            continue
        if failed_since is not None:
            log.warning(
                "writing again after %.1fs and %d failed attempts; catching up",
                time.monotonic() - failed_since,
                attempts,
            )
        return True
