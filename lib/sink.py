"""The store's side of the transport: turn consumed messages into a `storage.Batch`."""
from __future__ import annotations

import logging

from lib.storage import Batch
from lib.transport.base import LABELS, REJECTS, SESSIONS, STATES, TRUTH, Message

log = logging.getLogger(__name__)


def add_message(batch: Batch, msg: Message) -> None:
    """File one message under its table. A message that cannot be understood is logged, not fatal:
    one bad message must not stop every later reading from being stored."""
    try:
        if msg.topic == STATES:
            p = msg.json()
            for detector, state, score in p["states"]:
                batch.states[(p["session"], p["seq"], detector)] = (p["sensor"], p["ts_us"], state, score)
        elif msg.topic == REJECTS:
            p = msg.json()
            batch.rejects[(p["session"], p["seq"])] = (p["ts_us"], p["reason"], p["raw"])
        elif msg.topic == SESSIONS:
            batch.sessions.append(msg.json())
        elif msg.topic == TRUTH:
            p = msg.json()
            batch.truth[(p["run"], p["sensor"], p["kind"], p["start_us"])] = p["end_us"]
        elif msg.topic == LABELS:
            p = msg.json()
            key = (p["session"], int(p["seq"]))
            old = batch.labels.get(key)
            if old is None or p["made_us"] >= old[5]:
                batch.labels[key] = (p["sensor"], int(p["ts_us"]), p["verdict"], p.get("detector"),
                                     p.get("note"), int(p["made_us"]))
        else:
            h = msg.headers
            batch.readings[(h["session"], int(h["seq"]))] = (msg.topic, int(h["ts_us"]), float(msg.value))
    except (KeyError, ValueError, TypeError) as exc:
        log.error("skipping malformed %s message at offset %s: %s", msg.topic, msg.offset, exc)


def run_store(db_path, consumer, stop, flush_interval: float = 0.25, max_batch: int = 50_000,
              on_flush=None) -> int:
    """The single writer's loop: gather messages for `flush_interval`, write them to DuckDB in one
    transaction, and only then commit the consumer's position (at-least-once; the primary keys
    make a replay harmless). Returns the number of messages stored."""
    import time

    from lib.storage import write_batch
    stored = 0
    while True:
        stopping = stop.is_set()
        batch, n = Batch(), 0
        deadline = time.monotonic() + flush_interval
        while n < max_batch:
            remaining = deadline - time.monotonic()
            messages = consumer.poll(max_batch - n, max(0.0, remaining) if not stopping else 0.0)
            for m in messages:
                add_message(batch, m)
            n += len(messages)
            if remaining <= 0 or (stopping and not messages):
                break
        if n:
            write_batch(db_path, batch)
            consumer.commit()
            stored += n
            if on_flush:
                on_flush(n)
        elif stopping:
            # Drained: everything polled before the stop is written and committed.
            return stored
