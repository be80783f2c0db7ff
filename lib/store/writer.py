"""The single writer's batched, idempotent inserts.

Exactly one process (workers/store.py) writes the file: it holds it for its whole run (`Writer`),
writes a batch in one transaction a few times a second, and answers other processes' reads on a
socket (lib.store.readserver).

Every small table has a primary key built from what the wire carries (session id, per-session
sequence number, detector), and inserts skip what is already there: a batch replayed after a crash
between writing and committing the transport offset adds nothing. The two big tables (readings,
states) have no primary key: DuckDB's key index costs about 70 bytes a row on disk, must be loaded
to check each insert, and grows with the history (measured when sizing the store for 20,000
readings/s). They get the same guarantee from `watermarks`: the highest sequence number stored per
(session, sensor, kind), updated in the same transaction. The transport delivers each sensor's
messages in order, so a row at or below its watermark was stored before and is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb

from lib.messages import SessionEnd, SessionEvent, SessionGap, SessionStart
from lib.store import events, rollups
from lib.store.batch import Batch
from lib.store.files import connect
from lib.store.schema import open_checked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableWrite:
    """How a batch's rows for one table are written.

    `columns` names the batch's fields (key fields, then value fields) as the table's columns;
    those in `times` hold microseconds and are stored as TIMESTAMP. `conflict` says what a row whose
    key is already stored does (an ON CONFLICT action). With a `watermark` (the watermarks' kind:
    an SQL expression over the batch's columns), only rows above their (session, sensor, kind)
    watermark are inserted, and the watermarks move up. `derived(conn, new_rows)` keeps the tables
    derived from this one up to date (lib.store.rollups), given the SQL of the rows just inserted
    (times as TIMESTAMP).
    """

    table: str
    columns: tuple[str, ...]
    times: tuple[str, ...] = ("ts",)
    conflict: str = ""
    watermark: str = ""
    derived: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None

    def new_rows(self) -> str:
        """The SQL of the batch's rows to insert, times as TIMESTAMP: above their watermark when
        the table has one (so, until the watermarks move, the rows just inserted)."""
        select = ", ".join(f"make_timestamp({c}) AS {c}" if c in self.times else c for c in self.columns)
        source = "batch_df"
        if self.watermark:
            # New rows only: above the watermark of their (session, sensor, kind).
            source = (
                f"(SELECT b.* FROM batch_df b LEFT JOIN watermarks w ON w.session_id = b.session_id"
                f" AND w.sensor = b.sensor AND w.kind = {self.watermark} WHERE w.seq IS NULL OR b.seq > w.seq)"
            )
        return f"SELECT {select} FROM {source}"

    def statements(self) -> list[str]:
        """The insert, then the watermarks' move (`derived` runs between the two)."""
        conflict = f" ON CONFLICT {self.conflict}" if self.conflict else ""
        out = [f"INSERT INTO {self.table} BY NAME {self.new_rows()}{conflict}"]
        if self.watermark:
            out.append(
                f"INSERT INTO watermarks SELECT session_id, sensor, {self.watermark}, max(seq) FROM batch_df"
                " GROUP BY ALL ON CONFLICT DO UPDATE SET seq = greatest(watermarks.seq, excluded.seq)"
            )
        return out


# The tables the store fills from a batch, in the order they are written. Session events (start,
# end, gap) and operators' actions on events are few, and each its own statement.
WRITES = (
    TableWrite(
        "readings", ("session_id", "seq", "sensor", "ts", "value"), watermark="'reading'", derived=rollups.add_readings
    ),
    TableWrite(
        "states",
        ("session_id", "seq", "detector", "sensor", "ts", "state", "score"),
        watermark="detector",
        derived=rollups.add_states,
    ),
    TableWrite("rejects", ("session_id", "seq", "ts", "reason", "raw"), conflict="DO NOTHING"),
    TableWrite(
        "truth",
        ("run_id", "sensor", "kind", "started_at", "ended_at"),
        times=("started_at", "ended_at"),
        conflict="DO NOTHING",
    ),
    # The latest verdict on a reading wins.
    TableWrite(
        "labels",
        ("session_id", "seq", "sensor", "ts", "verdict", "detector", "note", "made_at"),
        times=("ts", "made_at"),
        conflict="DO UPDATE SET verdict = excluded.verdict, detector = excluded.detector, note = excluded.note,"
        " made_at = excluded.made_at WHERE excluded.made_at >= labels.made_at",
    ),
    TableWrite("events", events.COLUMNS, times=events.TIMES, conflict=events.CONFLICT),
)
_STATEMENTS = [(w, w.statements(), w.new_rows()) for w in WRITES]


def _write_session_events(conn: duckdb.DuckDBPyConnection, events: list[SessionEvent]) -> None:
    for event in events:
        if isinstance(event, SessionStart):
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, make_timestamp(?), NULL) ON CONFLICT DO NOTHING",
                (event.session, event.port, event.baud, event.host, event.ts_us),
            )
        elif isinstance(event, SessionEnd):
            conn.execute(
                "UPDATE sessions SET ended_at = make_timestamp(?) WHERE session_id = ?", (event.ts_us, event.session)
            )
        elif isinstance(event, SessionGap):
            conn.execute(
                "INSERT INTO gaps VALUES (?, make_timestamp(?), make_timestamp(?), ?) "
                "ON CONFLICT DO UPDATE SET ended_at = excluded.ended_at",
                (event.session, event.start_us, event.end_us, event.reason),
            )
        else:
            log.warning("unknown session event %r ignored", event)


def insert(conn: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """Write `batch` on `conn` (inside the caller's transaction)."""
    _write_session_events(conn, batch.sessions)
    for write, statements, new_rows in _STATEMENTS:
        frame = batch.frame(write.table, write.columns)
        if frame is None:
            continue
        conn.register("batch_df", frame)
        conn.execute(statements[0])
        if write.derived:
            write.derived(conn, new_rows)
        for sql in statements[1:]:
            conn.execute(sql)
        conn.unregister("batch_df")
    events.apply_actions(conn, batch.event_actions)


class Writer:
    """The store's hold on the file: one read-write connection for the whole run (readers go
    through lib.store.readserver), so a write is a transaction rather than open, write, close and
    checkpoint; DuckDB checkpoints its WAL by itself as it grows. After a failed write the
    connection is dropped and the next write opens the file again.

    Each write first checks that the file at the path is still the one it holds (device and
    inode): a file deleted or replaced under a running store used to take every later write with
    it, silently (a deleted file stays writable through an open handle), and the run was lost at
    the store's next restart. The store now says so and goes on in a new file at the path."""

    def __init__(self, path: Path, wait_s: float = 3600.0):
        self.path, self.wait_s = Path(path), wait_s
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._identity: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.replaced = 0  # times the file was found deleted or replaced

    def connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._conn is None:
                conn = connect(self.path, False, self.wait_s)
                st = os.stat(self.path)
                self._conn, self._identity = conn, (st.st_dev, st.st_ino)
            return self._conn

    def _check_file(self) -> None:
        if self._conn is None:
            return
        try:
            st = os.stat(self.path)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        if now == self._identity:
            return
        self.replaced += 1
        log.error(
            "THE DATABASE FILE %s WAS %s WHILE THE STORE HELD IT: what was stored before is no longer at "
            "that path. Writing on in %s at the same path, so nothing that arrives from now on is lost.",
            self.path,
            "DELETED" if now is None else "REPLACED BY ANOTHER FILE",
            "a new file" if now is None else "the file now there (after checking it)",
        )
        self.reset()
        # The new file gets the same checks and tables as at start-up: a foreign one stops the store.
        open_checked(self.path)

    def write(self, batch: Batch) -> None:
        self._check_file()
        conn = self.connection()
        try:
            conn.execute("BEGIN")
            insert(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:
                log.debug("rollback after a failed write failed too", exc_info=True)
            self.reset()
            raise

    def reset(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except duckdb.Error:
                log.debug("closing the connection after a failed write failed", exc_info=True)

    close = reset


def write_batch(path: Path, batch: Batch, wait_s: float = 3600.0) -> None:
    """Open the file, write one batch in one transaction and close it (tools and tests; the store
    keeps its `Writer`)."""
    writer = Writer(path, wait_s)
    try:
        writer.write(batch)
    finally:
        writer.close()
