"""The notifier's durable outbox: a SQLite file in the data folder (`alerts.sqlite`).

What the notifier decided to send is written here, in one transaction, before the transport
position that led to it is committed; a delivery is written here before it is tried. So a
kill -9 at any point loses nothing (the next start finds the undelivered rows) and sends nothing
twice without its idempotency key (a delivery cut mid-try is tried again with the same key and
body). Replayed event messages find their notifications already there (keys are primary keys).

Tables: `events` (the latest snapshot of each event seen), `marks` (per event and channel: the
highest severity told, and whether its resolution was told), `notifications` (one per event,
kind and channel), `deliveries` (one per message sent on a channel: one or more notifications).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from lib.detect.events import SEVERITY_RANK

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    rev      INTEGER NOT NULL,
    payload  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    event_id  TEXT NOT NULL,
    channel   TEXT NOT NULL,
    told_rank INTEGER NOT NULL,      -- the highest severity told (lib.detect.events.SEVERITY_RANK)
    resolved  INTEGER NOT NULL,      -- its resolution was told
    PRIMARY KEY (event_id, channel)
);
CREATE TABLE IF NOT EXISTS notifications (
    key        TEXT PRIMARY KEY,     -- <event id>|<kind>|<channel>: what makes a replay harmless
    channel    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,        -- opened | escalated | resolved
    severity   TEXT NOT NULL,
    body       TEXT NOT NULL,        -- JSON (lib.alerts.channels)
    created    REAL NOT NULL,        -- when it was decided (epoch seconds)
    arrived_us INTEGER,              -- the receive time of the reading that caused it
    held       TEXT,                 -- why it is not sent (quiet hours, too old); NULL otherwise
    delivery   TEXT                  -- the delivery carrying it, NULL until grouped
);
CREATE INDEX IF NOT EXISTS notifications_waiting ON notifications (channel, delivery);
CREATE TABLE IF NOT EXISTS deliveries (
    key        TEXT PRIMARY KEY,     -- the idempotency key sent with every try
    channel    TEXT NOT NULL,
    body       TEXT NOT NULL,        -- JSON list of the notifications it carries
    n          INTEGER NOT NULL,
    state      TEXT NOT NULL,        -- pending | retrying | sent | failed
    attempts   INTEGER NOT NULL,
    created    REAL NOT NULL,
    next_try   REAL NOT NULL,
    last_error TEXT,
    sent_at    REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_try);
"""

PENDING, RETRYING, SENT, FAILED = "pending", "retrying", "sent", "failed"
OPENED, ESCALATED, RESOLVED = "opened", "escalated", "resolved"


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    path = Path(path)
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a delivery's "sent" survives a power cut too, so nothing is sent again after one.
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    path.chmod(0o600)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Planner:
    """Turns `_vigie.events` messages into notifications in the outbox (inside the caller's
    transaction): one when an event opens, one when its severity rises, one when it resolves
    (by itself or by an operator), per channel its routes name."""

    def __init__(self, conn: sqlite3.Connection, settings, clock=time.time, local_now=None):
        self.conn, self.settings, self.clock = conn, settings, clock
        self.local_now = local_now or self._wall_now

    def _wall_now(self) -> datetime:
        """`clock` on the operator's wall clock (`[app] timezone`, else this machine's), for quiet hours."""
        zone = ZoneInfo(self.settings.timezone) if self.settings.timezone else None
        return datetime.fromtimestamp(self.clock(), zone)

    def add(self, payload: dict) -> int:
        """File one message's notifications; returns how many were added."""
        if payload.get("type") == "event":
            return self._snapshot(payload)
        if payload.get("type") == "action" and payload.get("action") == "resolve":
            row = self.conn.execute("SELECT payload FROM events WHERE event_id = ?", (payload["event_id"],)).fetchone()
            if row is None:
                return 0
            event = json.loads(row[0])
            if event.get("closed_ts_us") is not None:
                return 0  # it had resolved by itself: that was told
            return self._resolved(event, payload.get("by"), payload.get("note"), payload.get("made_us"))
        return 0

    def _snapshot(self, p: dict) -> int:
        old = self.conn.execute("SELECT rev FROM events WHERE event_id = ?", (p["id"],)).fetchone()
        if old is not None and p["rev"] < old[0]:
            return 0  # an older change arriving late: what it says was already handled
        self.conn.execute(
            "INSERT INTO events VALUES (?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET"
            " rev = excluded.rev, payload = excluded.payload",
            (p["id"], p["rev"], json.dumps(p)),
        )
        added = 0
        rank = SEVERITY_RANK[p["severity"]]
        changed_us = p.get("closed_ts_us") or p["end_ts_us"]
        too_old = self.clock() - changed_us / 1e6 > self.settings.give_up_s
        for channel in self.settings.channels_for(p["sensor"], p["severity"]):
            mark = self.conn.execute(
                "SELECT told_rank FROM marks WHERE event_id = ? AND channel = ?", (p["id"], channel)
            ).fetchone()
            told = mark[0] if mark else -1
            if rank <= told:
                continue
            kind = OPENED if told < 0 else ESCALATED
            held = None
            if too_old:
                held = "too old"
            elif self.settings.quiet is not None and self.settings.quiet.holds_back(p["severity"], self.local_now()):
                held = "quiet hours"
            arrived = p["start_ts_us"] if kind == OPENED else p["end_ts_us"]
            key = f"{p['id']}|{kind}:{p['severity']}|{channel}" if kind == ESCALATED else f"{p['id']}|{kind}|{channel}"
            added += self._insert(key, channel, p, kind, arrived, held)
            if held is None:
                self.conn.execute(
                    "INSERT INTO marks VALUES (?, ?, ?, 0) ON CONFLICT (event_id, channel) DO UPDATE"
                    " SET told_rank = excluded.told_rank",
                    (p["id"], channel, rank),
                )
        if p.get("closed_ts_us") is not None:
            added += self._resolved(p, None, None, None)
        return added

    def _resolved(self, event: dict, by, note, made_us) -> int:
        added = 0
        for (channel,) in self.conn.execute(
            "SELECT channel FROM marks WHERE event_id = ? AND resolved = 0", (event["id"],)
        ).fetchall():
            arrived = made_us if by else event.get("closed_ts_us")
            added += self._insert(
                f"{event['id']}|{RESOLVED}|{channel}",
                channel,
                event,
                RESOLVED,
                arrived,
                None,
                by=by,
                note=note,
                made_us=made_us,
            )
            self.conn.execute(
                "UPDATE marks SET resolved = 1 WHERE event_id = ? AND channel = ?", (event["id"], channel)
            )
        return added

    def _insert(self, key, channel, event, kind, arrived_us, held, **extra) -> int:
        body = {"key": key, "kind": kind, "event": event, **extra}
        # A notification held back earlier (quiet hours) is released by a later change that may go.
        cur = self.conn.execute(
            "INSERT INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
            " ON CONFLICT (key) DO UPDATE SET held = NULL, body = excluded.body, severity = excluded.severity,"
            " created = excluded.created, arrived_us = excluded.arrived_us WHERE notifications.held IS NOT NULL"
            " AND excluded.held IS NULL AND notifications.delivery IS NULL",
            (key, channel, event["id"], kind, event["severity"], json.dumps(body), self.clock(), arrived_us, held),
        )
        return cur.rowcount


def delivery_key(keys: list[str]) -> str:
    """The idempotency key of a message: the same notifications always give the same key."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


def group_due(conn: sqlite3.Connection, settings, now: float) -> tuple[list[str], float | None]:
    """Gather each channel's waiting notifications into one delivery when it is due: the first
    waits `group_wait_s` for others to join it, and a channel gets at most one new message per
    `group_interval_s` (a storm becomes one message per channel per interval). Returns the new
    deliveries' keys and when the next one falls due (None: nothing waits)."""
    made, next_due = [], None
    waiting = conn.execute(
        "SELECT channel, min(created) FROM notifications WHERE delivery IS NULL AND held IS NULL GROUP BY channel"
    ).fetchall()
    for channel, first in waiting:
        if channel not in settings.channels:
            continue  # a channel taken out of the configuration: its rows stay as they are
        last = conn.execute("SELECT max(created) FROM deliveries WHERE channel = ?", (channel,)).fetchone()[0]
        due = first + settings.group_wait_s
        if last is not None:
            due = max(due, last + settings.group_interval_s)
        if now < due:
            next_due = due if next_due is None else min(next_due, due)
            continue
        with transaction(conn):
            rows = conn.execute(
                "SELECT key, body FROM notifications WHERE channel = ? AND delivery IS NULL"
                " AND held IS NULL ORDER BY created, rowid",
                (channel,),
            ).fetchall()
            key = delivery_key([k for k, _ in rows])
            conn.execute(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?, 0, ?, ?, NULL, NULL)",
                (key, channel, json.dumps([json.loads(b) for _, b in rows]), len(rows), PENDING, now, now),
            )
            conn.executemany("UPDATE notifications SET delivery = ? WHERE key = ?", [(key, k) for k, _ in rows])
        made.append(key)
    return made, next_due


def due_deliveries(conn: sqlite3.Connection, now: float) -> list[tuple[str, str, list[dict], int, float]]:
    """(key, channel, notifications, attempts, created) of deliveries to try now, oldest first."""
    rows = conn.execute(
        "SELECT key, channel, body, attempts, created FROM deliveries WHERE state IN (?, ?)"
        " AND next_try <= ? ORDER BY created, key",
        (PENDING, RETRYING, now),
    ).fetchall()
    return [(k, c, json.loads(b), a, t) for k, c, b, a, t in rows]


def next_try(conn: sqlite3.Connection) -> float | None:
    return conn.execute("SELECT min(next_try) FROM deliveries WHERE state IN (?, ?)", (PENDING, RETRYING)).fetchone()[0]


def record_try(conn, key: str) -> None:
    """A try starts: counted before it is made, so a crash mid-try shows on the page."""
    with transaction(conn):
        conn.execute("UPDATE deliveries SET attempts = attempts + 1 WHERE key = ?", (key,))


def record_sent(conn, key: str, now: float) -> None:
    with transaction(conn):
        conn.execute("UPDATE deliveries SET state = ?, sent_at = ?, last_error = NULL WHERE key = ?", (SENT, now, key))


def record_failure(conn, key: str, reason: str, retry_at: float | None) -> None:
    """A failed try: retried at `retry_at`, or failed for good when it is None."""
    with transaction(conn):
        if retry_at is None:
            conn.execute("UPDATE deliveries SET state = ?, last_error = ? WHERE key = ?", (FAILED, reason, key))
        else:
            conn.execute(
                "UPDATE deliveries SET state = ?, last_error = ?, next_try = ? WHERE key = ?",
                (RETRYING, reason, retry_at, key),
            )


def delivery_states(path: Path, event_ids: list[str] | None = None):
    """For the page: each notification with its delivery's state, newest first. Read-only; an
    absent outbox (no notifier yet) reads as no rows."""
    path = Path(path)
    if not path.exists():
        return []
    conn = connect(path, read_only=True)
    try:
        sql = (
            "SELECT n.event_id, n.channel, n.kind, n.severity, n.created, n.held, d.state, d.attempts,"
            " d.last_error, d.sent_at, d.key FROM notifications n LEFT JOIN deliveries d ON d.key = n.delivery"
        )
        params: list = []
        if event_ids is not None:
            if not event_ids:
                return []
            sql += f" WHERE n.event_id IN ({', '.join('?' * len(event_ids))})"
            params = list(event_ids)
        return conn.execute(sql + " ORDER BY n.created DESC LIMIT 5000", params).fetchall()
    except sqlite3.OperationalError:
        return []  # a file being created right now, without its tables yet
    finally:
        conn.close()
