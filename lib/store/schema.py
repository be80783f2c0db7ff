"""The database's tables, as an ordered list of migrations, and bringing a file up to date.

The file records its schema version in `schema_version` (a row per migration applied). At
start-up the store (`open_checked`) reads that version with the file opened read-only, refuses a
file from a newer Vigie, and applies the migrations the file lacks, in order, in one transaction,
after copying the file to `<db>.pre-v<N>.bak` (N: the first migration applied). If one fails, the
transaction is rolled back, the file is put back as it was from that copy, and the error names the
migration. Nothing is copied when there is nothing to upgrade, or when the file is new.

Files written before versions were recorded hold migration 1's tables (or some of them: the
first releases added tables as they went) and no `schema_version`: they count as version 0, and
migration 1, which creates only what is missing, brings them to version 1.

Adding a table or a column
--------------------------
Append one `Migration` to MIGRATIONS with the next version number. Its SQL (or a function of the
connection, for a change that SQL alone cannot make) runs once on every file, old ones included,
inside the upgrade's transaction. Never edit a migration that has shipped: files out there have
already run it. If the store writes the new table, give it a line in lib.store.writer.WRITES and
its rows in lib.store.batch.Batch. tests/test_store_schema.py upgrades a file written before
versions (tests/fixtures/) through every migration and checks that every row is still there.
For example::

    Migration(4, "sessions.firmware: what the board said it runs", '''
        ALTER TABLE sessions ADD COLUMN firmware VARCHAR;
    '''),
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb

from lib.store import rollups
from lib.store.files import DatabaseFileError, check_database_file, connect_checked, scan_tables, table_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    change: str | Callable[[duckdb.DuckDBPyConnection], None]  # SQL statements, or a function

    def apply(self, conn: duckdb.DuckDBPyConnection) -> None:
        if callable(self.change):
            self.change(conn)
        else:
            conn.execute(self.change)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions, readings, states, watermarks, rejects, gaps, truth, labels",
        """
CREATE TABLE IF NOT EXISTS sessions (
    session_id VARCHAR PRIMARY KEY,
    port       VARCHAR,
    baud       INTEGER,
    host       VARCHAR,
    started_at TIMESTAMP,
    ended_at   TIMESTAMP
);
CREATE TABLE IF NOT EXISTS readings (
    session_id VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,      -- per-session line number: orders readings sharing a timestamp
    sensor     VARCHAR NOT NULL,
    ts         TIMESTAMP NOT NULL,   -- receive time, UTC
    value      DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    session_id VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,
    sensor     VARCHAR NOT NULL,
    ts         TIMESTAMP NOT NULL,
    detector   VARCHAR NOT NULL,     -- a registry name, or "rule:<name>" for a threshold rule
    state      VARCHAR NOT NULL,     -- initializing | normal | anomaly
    score      DOUBLE                -- in [0, 1], higher is more anomalous; NULL while initializing
);
CREATE TABLE IF NOT EXISTS watermarks (
    session_id VARCHAR NOT NULL,
    sensor     VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,     -- "reading", or a detector's name for its states
    seq        BIGINT NOT NULL,      -- the highest seq stored: replays at or below it are dropped
    PRIMARY KEY (session_id, sensor, kind)
);
CREATE TABLE IF NOT EXISTS rejects (
    session_id VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TIMESTAMP NOT NULL,
    reason     VARCHAR NOT NULL,
    raw        VARCHAR NOT NULL,     -- escaped bytes (see lib.ingest.protocol.escape_raw)
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS gaps (
    session_id VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    ended_at   TIMESTAMP,
    reason     VARCHAR,
    PRIMARY KEY (session_id, started_at)
);
CREATE TABLE IF NOT EXISTS truth (
    run_id     VARCHAR NOT NULL,     -- one simulator run
    sensor     VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,     -- spike, dip, level_shift, drift, flatline, noise, dropout, malformed
    started_at TIMESTAMP NOT NULL,
    ended_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, sensor, kind, started_at)
);
CREATE TABLE IF NOT EXISTS labels (
    session_id VARCHAR NOT NULL,     -- the reading an operator judged
    seq        BIGINT NOT NULL,
    sensor     VARCHAR NOT NULL,
    ts         TIMESTAMP NOT NULL,   -- the reading's time
    verdict    VARCHAR NOT NULL,     -- confirmed | rejected (a flag) | missed (an anomaly no one flagged)
    detector   VARCHAR,              -- the flag judged, if any
    note       VARCHAR,
    made_at    TIMESTAMP NOT NULL,   -- the latest verdict on a reading wins
    PRIMARY KEY (session_id, seq)
);
""",
    ),
    # IF NOT EXISTS: a file written in the short while when events came before versions has it.
    Migration(
        2,
        "events: one row per anomaly event",
        """
CREATE TABLE IF NOT EXISTS events (
    event_id    VARCHAR PRIMARY KEY,  -- <session>:<sensor>:<start seq> (lib.detect.events)
    sensor      VARCHAR NOT NULL,
    session_id  VARCHAR NOT NULL,     -- the session of its first flagged reading
    start_seq   BIGINT NOT NULL,
    start_ts    TIMESTAMP NOT NULL,
    start_value DOUBLE,               -- NULL when a silence opened it
    end_seq     BIGINT NOT NULL,      -- its last flagged reading (or the one that ended a silence)
    end_ts      TIMESTAMP NOT NULL,
    peak_seq    BIGINT NOT NULL,
    peak_ts     TIMESTAMP NOT NULL,
    peak_value  DOUBLE,
    peak_score  DOUBLE,
    members     VARCHAR NOT NULL,     -- the detectors and "rule:<name>"s that agreed, comma-separated
    n_flagged   BIGINT NOT NULL,
    max_agree   INTEGER NOT NULL,     -- the most detectors that flagged one of its readings
    severity    VARCHAR NOT NULL,     -- info | warning | critical
    silent      BOOLEAN NOT NULL,     -- open on a sensor that stopped sending
    closed_at   TIMESTAMP,            -- the detector closed it (quiet period over): resolved by itself
    rev         BIGINT NOT NULL,      -- the detector's change count: an older change never overwrites
    baseline    DOUBLE,               -- the last unflagged reading before it
    acked_by    VARCHAR,              -- acknowledged on the page: who, when, a note
    acked_at    TIMESTAMP,
    ack_note    VARCHAR,
    resolved_by VARCHAR,              -- resolved by an operator before it closed by itself
    resolved_at TIMESTAMP,
    resolve_note VARCHAR
);
""",
    ),
    # Derived from readings and states, kept by the writer (lib.store.rollups); built here from
    # what a file already holds.
    Migration(3, "readings_1m and flags: per-minute rollups and flagged readings, for long spans", rollups.rebuild),
)

VERSION_TABLE = "schema_version"
_VERSION_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL    -- UTC
)"""


def current_version() -> int:
    return MIGRATIONS[-1].version


class MigrationError(RuntimeError):
    """A migration failed; the message names it."""


def apply_migrations(conn: duckdb.DuckDBPyConnection, after: int = 0) -> None:
    """Run the migrations after version `after` on `conn`, in order, each recorded in
    schema_version. Also how tests and benches build the tables in a database in memory."""
    conn.execute(_VERSION_SCHEMA)
    for migration in MIGRATIONS:
        if migration.version <= after:
            continue
        try:
            migration.apply(conn)
        except Exception as exc:
            raise MigrationError(f"migration {migration.version} ({migration.name}) failed: {exc}") from exc
        conn.execute(
            f"INSERT INTO {VERSION_TABLE} VALUES (?, ?, ?)",
            (migration.version, migration.name, datetime.now(timezone.utc).replace(tzinfo=None)),
        )


def _first_tables() -> dict[str, list[str]]:
    """{table: [columns]} as migration 1 makes them: what a file from before versions holds."""
    conn = duckdb.connect()
    try:
        MIGRATIONS[0].apply(conn)
        return table_columns(conn)
    finally:
        conn.close()


def file_version(conn: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The schema version of the open file: 0 when it has no tables or none recorded. A file that
    is not Vigie's, that lacks a column of its version, or that a newer Vigie wrote is refused."""
    found = table_columns(conn)
    if not found:
        return 0
    if VERSION_TABLE in found:
        version = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()[0] or 0
        if version > current_version():
            raise DatabaseFileError(
                f"{path} has schema version {version}, written by a newer Vigie; this one knows versions up to "
                f"{current_version()}. Run the newer Vigie, or point [paths] data_dir elsewhere. "
                "Vigie leaves the file untouched."
            )
        return version
    if "readings" not in found:
        raise DatabaseFileError(
            f"{path} is a DuckDB database of something else (tables: {', '.join(sorted(found)[:8])}); "
            "Vigie will not add its tables to it: move it away, or point [paths] data_dir elsewhere."
        )
    for table, columns in _first_tables().items():
        if table in found and not set(columns) <= set(found[table]):
            missing = ", ".join(sorted(set(columns) - set(found[table])))
            raise DatabaseFileError(
                f"{path}: table {table} lacks column(s) {missing}; this file was not written "
                "by this version of Vigie. Move it away (or export it) before starting."
            )
    return 0


def open_checked(path: Path, wait_s: float = 30.0, scan: bool = True) -> None:
    """The store's start-up: refuse a foreign, damaged or newer file with a clear message, else
    create the tables or bring the file up to date. With `scan`, every table is read once (with
    the file opened read-only) so that a damaged block shows up now, not hours later."""
    path = Path(path)
    check_database_file(path)
    version, has_tables = 0, False
    if path.exists():
        conn = connect_checked(path, True, wait_s)
        try:
            version = file_version(conn, path)
            has_tables = bool(table_columns(conn))
            if scan:
                scan_tables(conn, path)
        finally:
            conn.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    if version < current_version():
        upgrade(path, version, wait_s, copy_first=has_tables)


def init_db(path: Path, wait_s: float = 30.0) -> None:
    """Create the tables in a new file, or bring an older one up to date (tests and tools; the
    store starts with `open_checked`, which also reads every block)."""
    open_checked(path, wait_s, scan=False)


def upgrade(path: Path, version: int, wait_s: float = 30.0, copy_first: bool = True) -> None:
    """Apply the migrations after `version` (the file's, from `file_version`) in one transaction,
    after copying the file when `copy_first`; on failure put the copy back and raise
    DatabaseFileError."""
    backup = _backup(path, version + 1) if copy_first else None
    conn = connect_checked(path, False, wait_s)
    try:
        conn.execute("BEGIN")
        apply_migrations(conn, version)
        conn.execute("COMMIT")
    except Exception as exc:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:
            log.debug("rollback after a failed upgrade failed too", exc_info=True)
        conn.close()
        if backup is None:
            raise DatabaseFileError(f"{path}: creating the tables failed: {exc}") from exc
        _copy_database(backup, path)
        raise DatabaseFileError(
            f"{path}: upgrading from schema version {version} to {current_version()} stopped: {exc}. The file "
            f"is as it was (a copy is at {backup}); keep running the previous Vigie, or report this."
        ) from exc
    conn.close()
    if backup is not None:
        log.info(
            "%s upgraded from schema version %d to %d; the file as it was is at %s",
            path,
            version,
            current_version(),
            backup,
        )


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _backup(path: Path, first: int) -> Path:
    """Copy the file (and its write-ahead log, if any) before migration `first` changes it."""
    backup = path.with_name(f"{path.name}.pre-v{first}.bak")
    if backup.exists():  # an earlier copy (an upgrade that failed, say) is kept as it is
        backup = path.with_name(f"{path.name}.pre-v{first}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.bak")
    try:
        _copy_database(path, backup)
    except OSError as exc:
        for p in (backup, _wal(backup)):
            p.unlink(missing_ok=True)
        raise DatabaseFileError(
            f"{path}: cannot copy the file to {backup} before upgrading it ({exc}); "
            "the file is unchanged. Free some space and start again."
        ) from exc
    return backup


def _copy_database(source: Path, target: Path) -> None:
    """Copy a DuckDB file and its write-ahead log (a missing log removes the target's), each under
    a temporary name first so that `target` is never half written."""
    for src, dst in ((source, target), (_wal(source), _wal(target))):
        if not src.exists():
            dst.unlink(missing_ok=True)
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
