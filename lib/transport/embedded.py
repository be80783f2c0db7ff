"""The embedded transport: a durable log in one SQLite file, so the default needs no broker.

SQLite (in WAL mode) lets several processes append and read one file safely, and a transaction
is atomic: a detector worker stores its outputs and moves its committed offset together, so a
crash can neither lose a reading nor judge one twice. A row holds many messages of one topic (one
flush); a message's offset is (row id << SHIFT) + its index in the row. SQLite
serialises writers, so a later commit always gets higher offsets and a reader never skips one.

Each consumer group has one member here (a lock file enforces it); Kafka is how a group grows.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

from lib.messages import Message
from lib.transport.base import Consumer, Producer, Transport
from lib.transport.packing import MAX_MESSAGES, SHIFT, encode, unpack

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    sensor  INTEGER NOT NULL,        -- 1 for a sensor topic, 0 for an internal one
    n       INTEGER NOT NULL,        -- messages in this row
    body    TEXT NOT NULL,           -- the messages, oldest first (lib.transport.packing)
    ts      REAL NOT NULL            -- append time, for retention
);
CREATE INDEX IF NOT EXISTS log_topic ON log (topic, id);
CREATE TABLE IF NOT EXISTS positions (grp TEXT PRIMARY KEY, offset INTEGER NOT NULL);
-- what each group reads, so its backlog can be counted from outside (the page's health)
CREATE TABLE IF NOT EXISTS subscriptions (grp TEXT PRIMARY KEY, topics TEXT NOT NULL, sensors INTEGER NOT NULL);
"""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL (in WAL mode): a commit survives the crash of any process, which is the failure the
    # pipeline is built to absorb; only a power cut can lose the last commits. FULL would add an
    # fsync to every commit, and the producer acknowledges to the board only after its commit: a
    # kill -9 inside that fsync made the board resend, and store, a batch twice.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


def _rows(messages: Iterable[Message], now: float):
    """One log row per topic per flush, holding all of that topic's messages in order: one SQLite
    row and one JSON encoding per row instead of per message (the per-message costs were most of
    the transport's time at 20,000 readings/s)."""
    by_topic: dict[str, list[Message]] = {}
    for m in messages:
        by_topic.setdefault(m.topic, []).append(m)
    for topic, msgs in by_topic.items():
        sensor = 0 if topic.startswith("_vigie.") else 1
        for i in range(0, len(msgs), MAX_MESSAGES):
            part = msgs[i : i + MAX_MESSAGES]
            yield topic, sensor, len(part), encode(part), now


_INSERT = "INSERT INTO log (topic, sensor, n, body, ts) VALUES (?, ?, ?, ?, ?)"


class EmbeddedProducer(Producer):
    def __init__(self, path: Path):
        self._conn = _connect(path)
        self._pending: list[Message] = []

    def send(self, messages: Iterable[Message]) -> None:
        self._pending.extend(messages)

    def flush(self) -> None:
        if not self._pending:
            return
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(_INSERT, _rows(self._pending, time.time()))
        self._pending.clear()

    def close(self, drain_timeout: float = 10.0) -> None:
        self.flush()  # durable and readable once flushed: nothing to drain
        self._conn.close()


class EmbeddedConsumer(Consumer):
    def __init__(self, path: Path, group: str, topics: Sequence[str], sensors: bool):
        self._lock = open(path.with_name(f"{path.name}.{group}.lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(
                f"consumer group {group!r} already has a member on {path}; "
                "the embedded transport runs one member per group (use Kafka to scale out)"
            ) from None
        self._conn = _connect(path)
        self.group = group
        cond = []
        if topics:
            cond.append(f"topic IN ({','.join('?' * len(topics))})")
        if sensors:
            cond.append("sensor = 1")
        self._where = " OR ".join(cond) or "0"
        self._params = tuple(topics)
        self._conn.execute(
            "INSERT OR REPLACE INTO subscriptions (grp, topics, sensors) VALUES (?, ?, ?)",
            (group, json.dumps(list(topics)), int(sensors)),
        )
        row = self._conn.execute("SELECT offset FROM positions WHERE grp = ?", (group,)).fetchone()
        self.committed = row[0] if row else 0
        self.position = self.committed

    def poll(self, max_records: int = 1000, timeout: float = 0.5) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            out: list[Message] = []
            # Rows from the one holding the position (it may be partly consumed) onwards; the
            # cursor is read lazily, so only the rows needed for `max_records` are decoded.
            cur = self._conn.execute(
                f"SELECT id, topic, body FROM log WHERE id >= ? AND ({self._where}) ORDER BY id",
                (self.position >> SHIFT, *self._params),
            )
            try:
                for row_id, topic, body in cur:
                    msgs = unpack(topic, body, 0, row_id)
                    if msgs and msgs[0].offset <= self.position:
                        msgs = [m for m in msgs if m.offset > self.position]
                    out.extend(msgs)
                    if len(out) >= max_records:
                        break
            finally:
                cur.close()
            if out:
                del out[max_records:]
                self.position = out[-1].offset
                return out
            if time.monotonic() >= deadline:
                return []
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def commit(self, outputs: Sequence[Message] = ()) -> None:
        if self.position == self.committed and not outputs:
            return
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            if outputs:
                self._conn.executemany(_INSERT, _rows(outputs, time.time()))
            self._conn.execute(
                "INSERT INTO positions (grp, offset) VALUES (?, ?) "
                "ON CONFLICT (grp) DO UPDATE SET offset = excluded.offset",
                (self.group, self.position),
            )
        self.committed = self.position

    def history(self, message: Message, n: int) -> list[Message]:
        found: list[Message] = []
        cur = self._conn.execute(
            "SELECT id, topic, body FROM log WHERE topic = ? AND id <= ? ORDER BY id DESC",
            (message.topic, message.offset >> SHIFT),
        )
        try:
            for row_id, topic, body in cur:
                found[:0] = [m for m in unpack(topic, body, 0, row_id) if m.offset < message.offset]
                if len(found) >= n:
                    break
        finally:
            cur.close()
        return found[-n:] if n > 0 else []

    def close(self) -> None:
        self._conn.close()
        self._lock.close()


class EmbeddedTransport(Transport):
    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        _connect(self.path).close()

    @classmethod
    def from_config(cls, config) -> EmbeddedTransport:
        return cls(config.bus_path)

    def producer(self) -> EmbeddedProducer:
        return EmbeddedProducer(self.path)

    def consumer(self, group: str, topics: Sequence[str] = (), sensors: bool = False) -> EmbeddedConsumer:
        return EmbeddedConsumer(self.path, group, topics, sensors)

    def backlog(self) -> dict[str, int]:
        """Per consumer group, the messages of what it reads after its committed position."""
        conn = _connect(self.path)
        try:
            out = {}
            for group, offset, topics, sensors in conn.execute(
                "SELECT s.grp, coalesce(p.offset, 0), s.topics, s.sensors "
                "FROM subscriptions s LEFT JOIN positions p USING (grp) ORDER BY s.grp"
            ):
                topics = json.loads(topics)
                cond = [f"topic IN ({','.join('?' * len(topics))})"] if topics else []
                cond += ["sensor = 1"] if sensors else []
                row, index = offset >> SHIFT, offset & ((1 << SHIFT) - 1)
                out[group] = conn.execute(
                    "SELECT coalesce(sum(CASE WHEN id = ? THEN n - 1 - ? ELSE n END), 0) FROM log "
                    f"WHERE id >= ? AND ({' OR '.join(cond) or '0'})",
                    (row, index, row, *topics),
                ).fetchone()[0]
            return out
        finally:
            conn.close()

    def prune(self, older_than_s: float) -> int:
        """Drop messages that every group has committed and that are older than `older_than_s`."""
        conn = _connect(self.path)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                low = conn.execute("SELECT min(offset) FROM positions").fetchone()[0]
                if low is None:
                    return 0
                # Rows below the lowest group's row are fully consumed by every group.
                cur = conn.execute(
                    "DELETE FROM log WHERE id < ? AND ts < ?", (low >> SHIFT, time.time() - older_than_s)
                )
                return cur.rowcount
        finally:
            conn.close()
