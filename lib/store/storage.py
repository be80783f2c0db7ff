"""The DuckDB file: schema, the single writer's batched idempotent inserts, and read access.

DuckDB lets one process hold a file read-write, and a read-only open from another process fails
while it does ("Could not set lock on file"). So exactly one process (workers/store.py) writes:
it holds the file for its whole run (`Writer`), writes a batch in one transaction a few times a
second, and answers other processes' reads on a socket (lib.store.readserver); `read_db` goes through
it, or opens the file read-only when no store runs.

Every small table has a primary key built from what the wire carries (session id, per-session
sequence number, detector), and inserts skip what is already there: a batch replayed after a crash
between writing and committing the transport offset adds nothing. The two big tables (readings,
states) have no primary key: DuckDB's key index costs about 70 bytes a row on disk, must be loaded
to check each insert, and grows with the history (measured in issue 8). They get the same guarantee
from `watermarks`: the highest sequence number stored per (session, sensor, kind), updated in the
same transaction. The transport delivers each sensor's messages in order, so a row at or below its
watermark was stored before and is dropped.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from lib.states import CODE_OF_STATE, STATE_CODES

log = logging.getLogger(__name__)

SCHEMA = """
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
"""

LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")


def is_lock_error(exc: BaseException) -> bool:
    return any(m in str(exc) for m in LOCK_MARKERS)


_CODE_INDEX = np.full(256, -1, dtype=np.int8)
for _i, _code in enumerate(STATE_CODES):
    _CODE_INDEX[ord(_code)] = _i
_STATE_DICTIONARY = pa.array(list(STATE_CODES.values()))


@dataclass
class Batch:
    """Rows gathered from the transport for one write. Keys dedupe replays inside a batch."""
    readings: dict = field(default_factory=dict)   # (session, seq) -> (sensor, ts_us, value)
    states: dict = field(default_factory=dict)     # (session, seq, detector) -> (sensor, ts_us, state, score)
    rejects: dict = field(default_factory=dict)    # (session, seq) -> (ts_us, reason, raw)
    sessions: list = field(default_factory=list)   # session events, in order
    truth: dict = field(default_factory=dict)      # (run, sensor, kind, start_us) -> end_us
    labels: dict = field(default_factory=dict)     # (session, seq) -> (sensor, ts_us, verdict, detector, note, made_us)
    events: dict = field(default_factory=dict)     # event id -> its latest snapshot (lib.detect.events payload)
    event_actions: list = field(default_factory=list)  # operators' acknowledgements and resolutions, in order
    # states as columns (what the detectors send): no Python object per row. One run per
    # add_states call: (session, sensor, detector, rows); seq, ts, codes and scores per row.
    _runs: list = field(default_factory=list)
    _seq: list = field(default_factory=list)
    _ts: list = field(default_factory=list)
    _codes: list = field(default_factory=list)
    _scores: list = field(default_factory=list)
    _state_high: dict = field(default_factory=dict)  # (session, sensor, detector) -> highest seq here

    def __len__(self) -> int:
        return (len(self.readings) + len(self.states) + len(self._seq) + len(self.rejects)
                + len(self.sessions) + len(self.truth) + len(self.labels) + len(self.events)
                + len(self.event_actions))

    def add_states(self, sensor: str, sessions: str | list[str], seqs: list[int], ts_us: list[int],
                   detector: str, codes: str, scores: list) -> None:
        """One detector's states (`codes`: a letter of STATE_CODES per reading) for readings of
        one sensor, in the sensor's order. Rows at or below the highest seq already in the batch
        for their (session, sensor, detector) are a replay and are dropped, as the watermarks
        drop one across batches."""
        if not isinstance(sessions, str):   # a message spanning sessions: row by row
            for i, session in enumerate(sessions):
                self.add_states(sensor, session, seqs[i:i + 1], ts_us[i:i + 1], detector, codes[i], scores[i:i + 1])
            return
        key = (sessions, sensor, detector)
        high = self._state_high.get(key)
        if high is not None and seqs[0] <= high:
            keep = [i for i, q in enumerate(seqs) if q > high]
            if not keep:
                return
            seqs, ts_us = [seqs[i] for i in keep], [ts_us[i] for i in keep]
            codes, scores = "".join(codes[i] for i in keep), [scores[i] for i in keep]
        self._state_high[key] = seqs[-1]
        self._runs.append((sessions, sensor, detector, len(seqs)))
        self._seq.extend(seqs)
        self._ts.extend(ts_us)
        self._codes.append(codes)
        self._scores.extend(scores)

    def judged_readings(self) -> Iterator[tuple[str, int, int]]:
        """(session, seq, ts_us) of each state row added with `add_states`."""
        at = 0
        for session, _, _, n in self._runs:
            for seq, ts in zip(self._seq[at:at + n], self._ts[at:at + n]):
                yield session, seq, ts
            at += n

    def state_table(self) -> pa.Table | None:
        """The state rows as an Arrow table; the repeated strings as dictionary columns built
        from the runs (numpy, not a Python string per row)."""
        for (session, seq, detector), (sensor, ts, state, score) in self.states.items():  # rows one by one (tests)
            self.add_states(sensor, session, [seq], [ts], detector, CODE_OF_STATE[state], [score])
        self.states.clear()
        if not self._seq:
            return None
        counts = np.array([r[3] for r in self._runs])

        def runs(i: int) -> pa.DictionaryArray:
            values = [r[i] for r in self._runs]
            names = list(dict.fromkeys(values))
            index = {v: k for k, v in enumerate(names)}
            codes = np.repeat(np.array([index[v] for v in values], dtype=np.int32), counts)
            return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, type=pa.string()))

        letters = np.frombuffer("".join(self._codes).encode("ascii"), dtype=np.uint8)
        state_index = _CODE_INDEX[letters]
        if (state_index < 0).any():
            raise ValueError(f"unknown state code(s) {sorted(set(chr(c) for c in letters[state_index < 0]))}")
        return pa.table({
            "session_id": runs(0), "seq": pa.array(self._seq, type=pa.int64()), "detector": runs(2),
            "sensor": runs(1), "ts_us": pa.array(self._ts, type=pa.int64()),
            "state": pa.DictionaryArray.from_arrays(pa.array(state_index), _STATE_DICTIONARY),
            "score": pa.array(self._scores, type=pa.float64())})


_NO_EXTENSIONS = {"autoload_known_extensions": False, "autoinstall_known_extensions": False}


def _connect(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    # Short retries: whoever holds the file (a tool, a store shutting down) usually lets go soon.
    delay = 0.005
    while True:
        try:
            # No extension loading: a file that is not ours must fail to open, not make DuckDB try
            # to download a reader for it (this machine, and many sites, have no internet).
            return duckdb.connect(str(path), read_only=read_only, config=_NO_EXTENSIONS)
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def init_db(path: Path, wait_s: float = 30.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path, False, wait_s)
    try:
        conn.execute(SCHEMA)
    finally:
        conn.close()


@contextmanager
def read_db(path: Path, wait_s: float = 5.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read connection: through the store when it runs (it holds the file; see
    lib.store.readserver), else the file opened read-only, retried while another process holds it."""
    from lib.store.readserver import RemoteConnection, socket_path
    path = Path(path)
    sock = socket_path(path)
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        conn = None
        if sock.exists():
            try:
                conn = RemoteConnection(sock)
            except OSError:
                pass   # a socket left by a store that was killed: read the file
        if conn is None:
            try:
                conn = _connect(path, True, 0.0)
            except duckdb.Error as exc:
                if not is_lock_error(exc) or time.monotonic() >= deadline:
                    raise
        if conn is not None:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    try:
        yield conn
    finally:
        conn.close()


class Writer:
    """The store's hold on the file: one read-write connection for the whole run (readers go
    through lib.store.readserver), so a write is a transaction rather than open, write, close and
    checkpoint; DuckDB checkpoints its WAL by itself as it grows. After a failed write the
    connection is dropped and the next write opens the file again."""

    def __init__(self, path: Path, wait_s: float = 3600.0):
        self.path, self.wait_s = Path(path), wait_s
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._conn is None:
                self._conn = _connect(self.path, False, self.wait_s)
            return self._conn

    def write(self, batch: Batch) -> None:
        conn = self.connection()
        try:
            conn.execute("BEGIN")
            _insert(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:
                pass
            self.reset()
            raise

    def reset(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except duckdb.Error:
                pass

    close = reset


def write_batch(path: Path, batch: Batch, wait_s: float = 3600.0) -> None:
    """Open the file, write one batch in one transaction and close it (tools and tests; the store
    keeps its `Writer`)."""
    writer = Writer(path, wait_s)
    try:
        writer.write(batch)
    finally:
        writer.close()


def _frame(rows: dict, names: list[str]) -> pa.Table:
    """An Arrow table from {key tuple: value tuple}, column by column: about twice as fast as a
    pandas frame built from row tuples, and DuckDB scans Arrow without a copy."""
    keys, vals = list(rows.keys()), list(rows.values())
    cols = [[k[i] for k in keys] for i in range(len(keys[0]))]
    if isinstance(vals[0], tuple):
        cols += [[v[i] for v in vals] for i in range(len(vals[0]))]
    else:
        cols.append(vals)
    return pa.table({name: pa.array(col) for name, col in zip(names, cols)})


# New rows only: above the watermark of their (session, sensor, kind), then the watermarks moved up.
_KEEP_NEW = """SELECT b.* FROM batch_df b LEFT JOIN watermarks w
  ON w.session_id = b.session_id AND w.sensor = b.sensor AND w.kind = {kind}
  WHERE w.seq IS NULL OR b.seq > w.seq"""
_RAISE_WATERMARKS = """INSERT INTO watermarks SELECT session_id, sensor, {kind}, max(seq) FROM batch_df GROUP BY ALL
  ON CONFLICT DO UPDATE SET seq = greatest(watermarks.seq, excluded.seq)"""
_READING = "'reading'"


def _insert(conn: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    for event in batch.sessions:
        kind = event["event"]
        if kind == "start":
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, make_timestamp(?), NULL) ON CONFLICT DO NOTHING",
                         (event["session"], event.get("port"), event.get("baud"), event.get("host"), event["ts_us"]))
        elif kind == "end":
            conn.execute("UPDATE sessions SET ended_at = make_timestamp(?) WHERE session_id = ?",
                         (event["ts_us"], event["session"]))
        elif kind == "gap":
            conn.execute("INSERT INTO gaps VALUES (?, make_timestamp(?), make_timestamp(?), ?) "
                         "ON CONFLICT DO UPDATE SET ended_at = excluded.ended_at",
                         (event["session"], event["start_us"], event.get("end_us"), event.get("reason")))
        else:
            log.warning("unknown session event %r ignored", kind)
    if batch.readings:
        df = _frame(batch.readings, ["session_id", "seq", "sensor", "ts_us", "value"])
        conn.register("batch_df", df)
        conn.execute("INSERT INTO readings SELECT session_id, seq, sensor, make_timestamp(ts_us), value"
                     f" FROM ({_KEEP_NEW.format(kind=_READING)})")
        conn.execute(_RAISE_WATERMARKS.format(kind=_READING))
        conn.unregister("batch_df")
    df = batch.state_table()
    if df is not None:
        conn.register("batch_df", df)
        conn.execute("INSERT INTO states SELECT session_id, seq, sensor, make_timestamp(ts_us), detector,"
                     f" state, score FROM ({_KEEP_NEW.format(kind='b.detector')})")
        conn.execute(_RAISE_WATERMARKS.format(kind="detector"))
        conn.unregister("batch_df")
    if batch.rejects:
        df = _frame(batch.rejects, ["session_id", "seq", "ts_us", "reason", "raw"])
        conn.register("batch_df", df)
        conn.execute("INSERT OR IGNORE INTO rejects SELECT session_id, seq, make_timestamp(ts_us), reason, raw"
                     " FROM batch_df")
        conn.unregister("batch_df")
    if batch.truth:
        df = _frame(batch.truth, ["run_id", "sensor", "kind", "start_us", "end_us"])
        conn.register("batch_df", df)
        conn.execute("INSERT OR IGNORE INTO truth SELECT run_id, sensor, kind, make_timestamp(start_us),"
                     " make_timestamp(end_us) FROM batch_df")
        conn.unregister("batch_df")
    if batch.labels:
        df = _frame(batch.labels, ["session_id", "seq", "sensor", "ts_us", "verdict", "detector", "note", "made_us"])
        conn.register("batch_df", df)
        conn.execute("INSERT INTO labels SELECT session_id, seq, sensor, make_timestamp(ts_us), verdict, detector,"
                     " note, make_timestamp(made_us) FROM batch_df ON CONFLICT DO UPDATE SET"
                     " verdict = excluded.verdict, detector = excluded.detector, note = excluded.note,"
                     " made_at = excluded.made_at WHERE excluded.made_at >= labels.made_at")
        conn.unregister("batch_df")
    if batch.events or batch.event_actions:
        from lib.store.events import insert_events
        insert_events(conn, batch.events, batch.event_actions)


# -- start-up checks and write errors (issue 7) ------------------------------------------------
# DuckDB files carry "DUCK" at byte 8. Anything else at the database path is someone else's file:
# the store refuses to start rather than open (and possibly rewrite) it.
DUCKDB_MAGIC, DUCKDB_MAGIC_OFFSET = b"DUCK", 8
DISK_FULL_MARKERS = ("No space left on device", "Disk quota exceeded", "could not write file",
                     "Could not write file", "File too large")
CORRUPT_MARKERS = ("Corrupt database", "not a valid DuckDB", "Could not read enough bytes", "checksum")


class DatabaseFileError(RuntimeError):
    """The file at the database path is foreign, corrupt or of another schema; the message says
    which and what to do. The store stops (exit code 3, not restarted) instead of touching it."""


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in (28, 122) or any(m in str(exc) for m in DISK_FULL_MARKERS)


def is_corruption(exc: BaseException) -> bool:
    return any(m in str(exc) for m in CORRUPT_MARKERS)


def _describe(head: bytes) -> str:
    if head.startswith(b"SQLite format 3"):
        return "an SQLite database"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if not head:
        return "an empty file"
    if all(32 <= b < 127 or b in b"\r\n\t" for b in head[:64]):
        return f"a text file starting {head[:40].decode('ascii', 'replace')!r}"
    return "not a DuckDB database"


def check_database_file(path: Path) -> None:
    """Raise DatabaseFileError when something other than a DuckDB database sits at `path`."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_file():
        raise DatabaseFileError(f"{path} is not a regular file; move it away (Vigie will not touch it)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[DUCKDB_MAGIC_OFFSET:DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC)] != DUCKDB_MAGIC:
        raise DatabaseFileError(
            f"{path} exists but is {_describe(head)} ({path.stat().st_size} bytes), not Vigie's DuckDB "
            "database. Vigie never overwrites it: move the file away, or point [paths] data_dir elsewhere.")


def _our_tables() -> dict[str, list[str]]:
    """{table: [columns]} of the schema above, parsed from SCHEMA."""
    tables, current = {}, None
    for line in SCHEMA.splitlines():
        line = line.strip()
        if line.startswith("CREATE TABLE IF NOT EXISTS"):
            current = line.split()[5]
            tables[current] = []
        elif current and line and not line.startswith(("PRIMARY KEY", ")")):
            tables[current].append(line.split()[0])
    return tables


def check_schema(conn: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A DuckDB file that holds tables but not Vigie's (another application's database), or
    Vigie's tables with other columns, is refused rather than altered."""
    found: dict[str, set[str]] = {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'").fetchall():
        found.setdefault(table, set()).add(column)
    if not found:
        return
    ours = _our_tables()
    if "readings" not in found:
        raise DatabaseFileError(
            f"{path} is a DuckDB database of something else (tables: {', '.join(sorted(found)[:8])}); "
            "Vigie will not add its tables to it: move it away, or point [paths] data_dir elsewhere.")
    for table, columns in ours.items():
        if table in found and not set(columns) <= found[table]:
            missing = ", ".join(sorted(set(columns) - found[table]))
            raise DatabaseFileError(f"{path}: table {table} lacks column(s) {missing}; this file was not written "
                                    "by this version of Vigie. Move it away (or export it) before starting.")


def open_checked(path: Path, wait_s: float = 30.0) -> None:
    """The store's start-up: refuse a foreign or corrupt file with a clear message, else create the
    schema. Reads every table once so that a damaged block shows up now, not hours later."""
    path = Path(path)
    check_database_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = _connect(path, False, wait_s)
    except duckdb.Error as exc:
        if is_lock_error(exc) or is_disk_full(exc):
            raise
        raise DatabaseFileError(f"{path} cannot be opened as a DuckDB database ({exc}); move it away "
                                "or restore a backup. Vigie will not overwrite it.") from None
    try:
        check_schema(conn, path)
        conn.execute(SCHEMA)
        for table, columns in _our_tables().items():
            # Names come from SCHEMA, not from input. Hashing every column reads every block
            # (min/max may be answered from statistics without reading the data).
            conn.execute(f"SELECT count(*), sum(hash({', '.join(columns)})) FROM {table}").fetchall()
    except duckdb.Error as exc:
        if not is_corruption(exc):
            raise
        raise DatabaseFileError(f"{path} is damaged ({exc}); move it away or restore a backup. "
                                "Vigie will not overwrite it.") from None
    finally:
        conn.close()
