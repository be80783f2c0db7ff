"""A durable, bounded local outbox between a producing process and the Kafka broker.

Everything a Kafka-mode producer sends goes here first (one SQLite transaction per flush, fsynced),
and a delivery thread moves it to the broker in order, deleting each record once the broker has
acknowledged it (acks=all). When the broker is unreachable the records simply stay: the serial
port keeps being read, nothing read from the board is lost, and delivery resumes in order when the
broker is back. A process that stops or crashes with records left leaves them in the file; the
next process on the same data folder delivers them.

Acknowledged records are kept `retain_s` seconds more (outside the bound): a broker that comes
back empty (a new cluster, or a broker without durable storage) has lost what it acknowledged but
consumers had not read yet, and `requeue_retained` sends those again, in order, before the rest.

Bounded: past `max_bytes` new records are refused (counted, with an error in the log) rather
than filling the disk; the oldest readings, already safe here, are the ones kept.

Several processes may append to one spool file (SQLite serialises them); one of them at a time,
the holder of the file's lock, delivers (see `DeliveryLock`).
"""
from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from lib.transport.base import Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,   -- delivery order
    topic   TEXT NOT NULL,
    key     TEXT,
    value   TEXT NOT NULL,
    headers TEXT,
    size    INTEGER NOT NULL,
    acked   REAL                                  -- when the broker acknowledged it; NULL: waiting
);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (id) WHERE acked IS NULL;
CREATE INDEX IF NOT EXISTS outbox_acked ON outbox (acked) WHERE acked IS NOT NULL;
CREATE TABLE IF NOT EXISTS totals (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL,
                                   refused INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
"""

# What a record costs beyond its text (row overhead), so that many tiny readings count honestly.
_ROW_OVERHEAD = 32


def _size(m: Message, headers: str | None) -> int:
    return len(m.topic) + len(m.key or "") + len(m.value) + len(headers or "") + _ROW_OVERHEAD


class Spool:
    def __init__(self, path: Path, max_bytes: int, retain_s: float = 120.0):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retain_s = retain_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a flushed reading survives a power cut, not only a process crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def append(self, messages: Iterable[Message]) -> int:
        """Store messages durably, in order; returns how many were refused because the spool is
        full (0 normally)."""
        rows = []
        for m in messages:
            h = json.dumps(m.headers, separators=(",", ":")) if m.headers else None
            rows.append((m.topic, m.key, m.value, h, _size(m, h)))
        if not rows:
            return 0
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            used = self._conn.execute("SELECT bytes FROM totals").fetchone()[0]
            room, kept = self.max_bytes - used, 0
            for r in rows:
                if r[4] > room:
                    break
                room -= r[4]
                kept += 1
            refused = len(rows) - kept
            if kept:
                self._conn.executemany(
                    "INSERT INTO outbox (topic, key, value, headers, size) VALUES (?, ?, ?, ?, ?)", rows[:kept])
            self._conn.execute("UPDATE totals SET bytes = bytes + ?, refused = refused + ?",
                               (sum(r[4] for r in rows[:kept]), refused))
        return refused

    def peek(self, limit: int) -> list[tuple[int, Message]]:
        """The oldest `limit` records, as (id, message), in order."""
        rows = self._conn.execute("SELECT id, topic, key, value, headers FROM outbox WHERE acked IS NULL"
                                  " ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [(i, Message(t, k, v, json.loads(h) if h else {})) for i, t, k, v, h in rows]

    def ack(self, up_to_id: int) -> None:
        """Mark every waiting record up to `up_to_id` delivered (kept `retain_s` more, then dropped)."""
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            freed = self._conn.execute("SELECT coalesce(sum(size), 0) FROM outbox WHERE id <= ? AND acked IS NULL",
                                       (up_to_id,)).fetchone()[0]
            self._conn.execute("UPDATE outbox SET acked = ? WHERE id <= ? AND acked IS NULL", (now, up_to_id))
            self._conn.execute("DELETE FROM outbox WHERE acked IS NOT NULL AND acked < ?", (now - self.retain_s,))
            self._conn.execute("UPDATE totals SET bytes = max(0, bytes - ?)", (freed,))

    def requeue_retained(self) -> int:
        """Send the recently acknowledged records again (the broker lost them); returns how many."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            n, size = self._conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE acked IS NOT NULL"
                                         ).fetchone()
            self._conn.execute("UPDATE outbox SET acked = NULL WHERE acked IS NOT NULL")
            self._conn.execute("UPDATE totals SET bytes = bytes + ?", (size,))
        return n

    def pending(self) -> tuple[int, int]:
        """(records waiting, bytes they use)."""
        n = self._conn.execute("SELECT count(*) FROM outbox WHERE acked IS NULL").fetchone()[0]
        return n, self._conn.execute("SELECT bytes FROM totals").fetchone()[0]

    def refused(self) -> int:
        """Records refused since the spool file was created because it was full."""
        return self._conn.execute("SELECT refused FROM totals").fetchone()[0]

    def close(self) -> None:
        self._conn.close()


class DeliveryLock:
    """Which process delivers a spool: the one holding an exclusive lock on `<spool>.lock`. The
    lock goes with the process, so a crashed deliverer's records are taken over at once."""

    def __init__(self, spool_path: Path):
        self._file = open(Path(spool_path).with_suffix(".lock"), "w")
        self.held = False

    def try_acquire(self) -> bool:
        if not self.held:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
            except BlockingIOError:
                pass
        return self.held

    def release(self) -> None:
        if self.held:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.release()
        self._file.close()
