"""A durable, bounded local outbox between a producing process and the Kafka broker.

Everything a Kafka-mode producer sends goes here first (one SQLite transaction per flush, fsynced),
and a delivery thread moves it to the broker in order, deleting it once the broker has
acknowledged it (acks=all). When the broker is unreachable the readings simply stay: the serial
port keeps being read, nothing read from the board is lost, and delivery resumes in order when the
broker is back. A process that stops or crashes with readings left leaves them in the file; the
next process on the same data folder delivers them.

A row holds one flush's messages of one topic and key, packed (`lib.transport.packing`): the cost
of a flush is a few rows, not a row per reading (per-reading rows were most of the Kafka
producer's time at 20,000 readings/s).

Acknowledged rows are kept `retain_s` seconds more (outside the bound): a broker that comes back
empty (a new cluster, or a broker without durable storage) has lost what it acknowledged but
consumers had not read yet, and `requeue_retained` sends those again, in order, before the rest.

Bounded: past `max_bytes` new messages are refused (counted, with an error in the log) rather
than filling the disk; the oldest readings, already safe here, are the ones kept.

Several processes may append to one spool file (SQLite serialises them); one of them at a time,
the holder of the file's lock, delivers (see `DeliveryLock`).
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lib.messages import TS_US, Message
from lib.transport.packing import MAX_MESSAGES, encode, unpack

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,   -- delivery order
    topic   TEXT NOT NULL,
    key     TEXT,                                 -- every message in the row has this key
    n       INTEGER NOT NULL,                     -- messages in the row
    body    TEXT NOT NULL,                        -- lib.transport.packing.encode
    ts_ms   INTEGER,                              -- the last message's receive time, if it has one
    size    INTEGER NOT NULL,
    acked   REAL                                  -- when the broker acknowledged it; NULL: waiting
);
CREATE INDEX IF NOT EXISTS batches_waiting ON batches (id) WHERE acked IS NULL;
CREATE INDEX IF NOT EXISTS batches_acked ON batches (acked) WHERE acked IS NOT NULL;
CREATE TABLE IF NOT EXISTS totals (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL,
                                   refused INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
"""

# What a row costs beyond its text, so that many tiny rows count honestly.
_ROW_OVERHEAD = 32


@dataclass(slots=True)
class Batch:
    """One spool row: `n` messages of one topic and key, oldest first."""

    id: int
    topic: str
    key: str | None
    n: int
    body: str
    ts_ms: int | None

    def messages(self) -> list[Message]:
        return unpack(self.topic, self.body)


def _rows(messages: Sequence[Message]) -> list[tuple]:
    """(topic, key, n, body, ts_ms, size) per topic and key, in order of first appearance."""
    groups: dict[tuple, list[Message]] = {}
    for m in messages:
        groups.setdefault((m.topic, m.key), []).append(m)
    rows = []
    for (topic, key), msgs in groups.items():
        for i in range(0, len(msgs), MAX_MESSAGES):
            part = msgs[i : i + MAX_MESSAGES]
            body = encode(part)
            ts_us = part[-1].headers.get(TS_US)
            ts_ms = int(ts_us) // 1000 if ts_us and ts_us.isdigit() else None
            rows.append((topic, key, len(part), body, ts_ms, len(topic) + len(key or "") + len(body) + _ROW_OVERHEAD))
    return rows


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
        self._upgrade()

    def _upgrade(self) -> None:
        """A spool left by a version that stored a row per message (table `outbox`): its waiting
        messages move into batches, in order, so an upgrade loses none of them."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            if not self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
            ).fetchone():
                return
            old = [
                Message(t, k, v, json.loads(h) if h else {})
                for t, k, v, h in self._conn.execute(
                    "SELECT topic, key, value, headers FROM outbox WHERE acked IS NULL ORDER BY id"
                )
            ]
            rows = _rows(old) if old else []
            self._conn.executemany(
                "INSERT INTO batches (topic, key, n, body, ts_ms, size) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            self._conn.execute("DROP TABLE outbox")
            self._conn.execute(
                "UPDATE totals SET bytes = (SELECT coalesce(sum(size), 0) FROM batches WHERE acked IS NULL)"
            )

    def append(self, messages: Sequence[Message]) -> int:
        """Store messages durably, in order; returns how many were refused because the spool is
        full (0 normally): the newest ones, so what is kept is a prefix of `messages`."""
        messages = list(messages)
        if not messages:
            return 0
        rows = _rows(messages)
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            room = self.max_bytes - self._conn.execute("SELECT bytes FROM totals").fetchone()[0]
            kept = len(messages)
            if sum(r[5] for r in rows) > room:
                kept, rows = _fitting_prefix(messages, room)
            if rows:
                self._conn.executemany(
                    "INSERT INTO batches (topic, key, n, body, ts_ms, size) VALUES (?, ?, ?, ?, ?, ?)", rows
                )
            refused = len(messages) - kept
            self._conn.execute(
                "UPDATE totals SET bytes = bytes + ?, refused = refused + ?", (sum(r[5] for r in rows), refused)
            )
        return refused

    def peek(self, limit: int) -> list[Batch]:
        """The oldest waiting rows, in order, until they hold at least `limit` messages (or all)."""
        out, n = [], 0
        cur = self._conn.execute("SELECT id, topic, key, n, body, ts_ms FROM batches WHERE acked IS NULL ORDER BY id")
        try:
            for row in cur:
                out.append(Batch(*row))
                n += row[3]
                if n >= limit:
                    break
        finally:
            cur.close()
        return out

    def ack(self, up_to_id: int) -> None:
        """Mark every waiting row up to `up_to_id` delivered (kept `retain_s` more, then dropped)."""
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            freed = self._conn.execute(
                "SELECT coalesce(sum(size), 0) FROM batches WHERE id <= ? AND acked IS NULL", (up_to_id,)
            ).fetchone()[0]
            self._conn.execute("UPDATE batches SET acked = ? WHERE id <= ? AND acked IS NULL", (now, up_to_id))
            self._conn.execute("DELETE FROM batches WHERE acked IS NOT NULL AND acked < ?", (now - self.retain_s,))
            self._conn.execute("UPDATE totals SET bytes = max(0, bytes - ?)", (freed,))

    def requeue_retained(self) -> int:
        """Send the recently acknowledged messages again (the broker lost them); returns how many."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            n, size = self._conn.execute(
                "SELECT coalesce(sum(n), 0), coalesce(sum(size), 0) FROM batches WHERE acked IS NOT NULL"
            ).fetchone()
            self._conn.execute("UPDATE batches SET acked = NULL WHERE acked IS NOT NULL")
            self._conn.execute("UPDATE totals SET bytes = bytes + ?", (size,))
        return n

    def pending(self) -> tuple[int, int]:
        """(messages waiting, bytes they use)."""
        n = self._conn.execute("SELECT coalesce(sum(n), 0) FROM batches WHERE acked IS NULL").fetchone()[0]
        return n, self._conn.execute("SELECT bytes FROM totals").fetchone()[0]

    def refused(self) -> int:
        """Messages refused since the spool file was created because it was full."""
        return self._conn.execute("SELECT refused FROM totals").fetchone()[0]

    def close(self) -> None:
        self._conn.close()


def _fitting_prefix(messages: list[Message], room: int) -> tuple[int, list[tuple]]:
    """The longest prefix of `messages` whose rows fit in `room` bytes, and those rows. Only for a
    spool that is (nearly) full, so the binary search's repeated encodings cost nothing normally."""
    lo, hi, best = 0, len(messages), []
    while lo < hi:
        mid = (lo + hi + 1) // 2
        rows = _rows(messages[:mid])
        if sum(r[5] for r in rows) <= room:
            lo, best = mid, rows
        else:
            hi = mid - 1
    return lo, best


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
