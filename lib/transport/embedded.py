"""The embedded transport: a durable log in one SQLite file, so the default needs no broker.

SQLite (in WAL mode) lets several processes append and read one file safely, and a transaction
is atomic: a detector worker stores its outputs and moves its committed offset together, so a
crash can neither lose a reading nor judge one twice. Offsets are the log's row ids; SQLite
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

from lib.transport.base import Consumer, Message, Producer, Transport

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    offset  INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    key     TEXT,
    value   TEXT NOT NULL,
    headers TEXT,
    sensor  INTEGER NOT NULL,        -- 1 for a sensor topic, 0 for an internal one
    ts      REAL NOT NULL            -- append time, for retention
);
CREATE INDEX IF NOT EXISTS messages_topic ON messages (topic, offset);
CREATE TABLE IF NOT EXISTS offsets (grp TEXT PRIMARY KEY, offset INTEGER NOT NULL);
"""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives a power cut, not only a process crash; commits are batched, so the
    # fsync cost is paid a few times a second, not per reading.
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    return conn


def _rows(messages: Iterable[Message], now: float):
    for m in messages:
        yield (m.topic, m.key, m.value, json.dumps(m.headers) if m.headers else None,
               0 if m.topic.startswith("_vigie.") else 1, now)


_INSERT = "INSERT INTO messages (topic, key, value, headers, sensor, ts) VALUES (?, ?, ?, ?, ?, ?)"


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

    def close(self) -> None:
        self.flush()
        self._conn.close()


class EmbeddedConsumer(Consumer):
    def __init__(self, path: Path, group: str, topics: Sequence[str], sensors: bool):
        self._lock = open(path.with_name(f"{path.name}.{group}.lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"consumer group {group!r} already has a member on {path}; "
                               "the embedded transport runs one member per group (use Kafka to scale out)") from None
        self._conn = _connect(path)
        self.group = group
        cond = []
        if topics:
            cond.append(f"topic IN ({','.join('?' * len(topics))})")
        if sensors:
            cond.append("sensor = 1")
        self._where = " OR ".join(cond) or "0"
        self._params = tuple(topics)
        row = self._conn.execute("SELECT offset FROM offsets WHERE grp = ?", (group,)).fetchone()
        self.committed = row[0] if row else 0
        self.position = self.committed

    def poll(self, max_records: int = 1000, timeout: float = 0.5) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self._conn.execute(
                f"SELECT offset, topic, key, value, headers FROM messages WHERE offset > ? AND ({self._where})"
                " ORDER BY offset LIMIT ?", (self.position, *self._params, max_records)).fetchall()
            if rows:
                self.position = rows[-1][0]
                return [Message(t, k, v, json.loads(h) if h else {}, 0, o) for o, t, k, v, h in rows]
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
            self._conn.execute("INSERT INTO offsets (grp, offset) VALUES (?, ?) "
                               "ON CONFLICT (grp) DO UPDATE SET offset = excluded.offset",
                               (self.group, self.position))
        self.committed = self.position

    def history(self, message: Message, n: int) -> list[Message]:
        rows = self._conn.execute(
            "SELECT offset, topic, key, value, headers FROM messages WHERE topic = ? AND offset < ?"
            " ORDER BY offset DESC LIMIT ?", (message.topic, message.offset, n)).fetchall()
        return [Message(t, k, v, json.loads(h) if h else {}, 0, o) for o, t, k, v, h in reversed(rows)]

    def lag(self) -> int:
        return self._conn.execute("SELECT coalesce(max(offset), 0) FROM messages").fetchone()[0] - self.committed

    def close(self) -> None:
        self._conn.close()
        self._lock.close()


class EmbeddedTransport(Transport):
    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        _connect(self.path).close()

    def producer(self) -> EmbeddedProducer:
        return EmbeddedProducer(self.path)

    def consumer(self, group: str, topics: Sequence[str] = (), sensors: bool = False) -> EmbeddedConsumer:
        return EmbeddedConsumer(self.path, group, topics, sensors)

    def prune(self, older_than_s: float) -> int:
        """Drop messages that every group has committed and that are older than `older_than_s`."""
        conn = _connect(self.path)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                low = conn.execute("SELECT min(offset) FROM offsets").fetchone()[0]
                if low is None:
                    return 0
                cur = conn.execute("DELETE FROM messages WHERE offset <= ? AND ts < ?",
                                   (low, time.time() - older_than_s))
                return cur.rowcount
        finally:
            conn.close()
