"""The store's defences: a foreign or damaged database file is refused and left as it
was; a failing write (full disk) is retried with the batch kept uncommitted; retention prunes
and exports through the single writer."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import duckdb
import pandas as pd
import pytest

from lib.config import PROJECT_ROOT, load_config
from lib.store.batch import Batch
from lib.store.files import DatabaseFileError, error_cause
from lib.store.reader import read_db
from lib.store.retention import Retention, prune
from lib.store.schema import init_db, open_checked
from lib.store.sink import write_until_done
from lib.store.writer import Writer, write_batch
from tests.system import small_tmpfs


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _batch(start: int, n: int, ts0_us: int) -> Batch:
    b = Batch()
    for i in range(start, start + n):
        b.readings[("s1", i)] = ("temperature", ts0_us + i * 1_000_000, float(i))
        b.states[("s1", i, "dbscan")] = ("temperature", ts0_us + i * 1_000_000, "normal", 0.1)
    return b


def _foreign_files(tmp_path):
    text = tmp_path / "text"
    text.write_text("sensor,value\nhumidite,42\n" * 50)
    rnd = tmp_path / "random"
    rnd.write_bytes(os.urandom(50_000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    lite = tmp_path / "sqlite"
    c = sqlite3.connect(lite)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    other = tmp_path / "other.duckdb"
    c = duckdb.connect(str(other))
    c.execute("CREATE TABLE invoices (id INTEGER, amount DOUBLE)")
    c.close()
    old = tmp_path / "old.duckdb"
    c = duckdb.connect(str(old))
    c.execute("CREATE TABLE readings (session_id VARCHAR, seq BIGINT)")
    c.close()
    good = tmp_path / "good.duckdb"
    init_db(good)
    rng = random.Random(7)
    b = Batch()
    for i in range(100_000):
        b.readings[("s1", i)] = (f"t{rng.randrange(50)}", 1_700_000_000_000_000 + rng.randrange(10**12), rng.random())
    write_batch(good, b)
    c = duckdb.connect(str(good))
    # Where the readings' values live: damage exactly those blocks (most of a DuckDB file is free blocks).
    blocks = sorted(
        {
            r[0]
            for r in c.execute(
                "SELECT block_id FROM pragma_storage_info('readings') WHERE segment_type = 'DOUBLE' AND block_id >= 0"
            ).fetchall()
        }
    )
    c.close()
    data = bytearray(good.read_bytes())
    last = 12288 + (max(blocks) + 1) * 262144
    truncated = tmp_path / "truncated.duckdb"
    truncated.write_bytes(bytes(data[: last - 262144]))
    damaged = tmp_path / "damaged.duckdb"
    start = 12288 + blocks[-1] * 262144 + 100
    data[start : start + 60_000] = os.urandom(60_000)
    damaged.write_bytes(bytes(data))
    return {
        "text": (text, "text file"),
        "random": (rnd, "not a DuckDB"),
        "empty": (empty, "empty file"),
        "sqlite": (lite, "SQLite"),
        "other duckdb": (other, "something else"),
        "other schema": (old, "lacks column"),
        "truncated": (truncated, "Vigie will not overwrite"),
        "damaged": (damaged, ""),
    }


def test_foreign_or_damaged_files_are_refused_and_left_untouched(tmp_path):
    for name, (path, message) in _foreign_files(tmp_path).items():
        before = _digest(path)
        with pytest.raises(DatabaseFileError) as err:
            open_checked(path)
        assert message in str(err.value), (name, str(err.value))
        assert str(path) in str(err.value)
        assert _digest(path) == before, f"{name}: the file was modified"
        assert not path.with_name(path.name + ".wal").exists() or name in ("truncated", "damaged")


def test_store_exits_3_with_one_clear_line_on_a_foreign_file(tmp_path):
    config = load_config()
    config.data_dir.mkdir(parents=True)
    config.db_path.write_text("not a database\n")
    out = subprocess.run(
        [sys.executable, "-m", "workers.store"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert out.returncode == 3, out.stderr
    assert "is a text file" in out.stderr and "never overwrites" in out.stderr
    assert "Traceback" not in out.stderr
    assert config.db_path.read_text() == "not a database\n"


def test_store_accepts_its_own_file_and_an_absent_one(tmp_path):
    path = tmp_path / "v.duckdb"
    open_checked(path)  # created
    write_batch(path, _batch(1, 10, 1_700_000_000_000_000))
    open_checked(path)  # reopened
    with read_db(path) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (10,)


def test_a_failing_write_is_retried_until_it_succeeds(tmp_path, caplog):
    path = tmp_path / "v.duckdb"
    init_db(path)
    failures = iter([duckdb.IOException('Could not write file "x.wal": No space left on device')] * 3)

    def write(p, batch):
        exc = next(failures, None)
        if exc:
            raise exc
        write_batch(p, batch)

    import lib.store.sink as sink

    old = sink.WRITE_BACKOFF_START_S
    sink.WRITE_BACKOFF_START_S = 0.01
    try:
        assert write_until_done(path, _batch(1, 5, 1_700_000_000_000_000), threading.Event(), write)
    finally:
        sink.WRITE_BACKOFF_START_S = old
    assert "disk full" in caplog.text and "writing again" in caplog.text
    assert caplog.text.count("disk full") == 1  # one line per outage, not one per retry


def test_a_stop_during_a_write_outage_leaves_the_batch_uncommitted(tmp_path):
    stop = threading.Event()
    stop.set()

    def write(p, batch):
        raise OSError(28, "No space left on device")

    assert write_until_done(tmp_path / "v.duckdb", Batch(), stop, write) is False


def test_a_damaged_file_met_while_writing_stops_the_store(tmp_path):
    def write(p, batch):
        raise duckdb.Error("Corrupt database file: computed checksum 1 does not match stored checksum 2")

    with pytest.raises(DatabaseFileError):
        write_until_done(tmp_path / "v.duckdb", Batch(), threading.Event(), write)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "none"])
def test_retention_exports_then_deletes_only_old_rows(tmp_path, fmt):
    path = tmp_path / "v.duckdb"
    init_db(path)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    old_us = int((now - timedelta(days=10)).replace(tzinfo=timezone.utc).timestamp() * 1e6)
    new_us = int((now - timedelta(hours=1)).replace(tzinfo=timezone.utc).timestamp() * 1e6)
    b = _batch(1, 100, old_us)
    b2 = _batch(101, 50, new_us)
    b.readings.update(b2.readings)
    b.states.update(b2.states)
    write_batch(path, b)
    removed = prune(path, now - timedelta(days=7), tmp_path / "export", fmt)
    assert removed == {"readings": 100, "states": 100}
    with read_db(path) as conn:
        assert conn.execute("SELECT count(*), min(seq) FROM readings").fetchone() == (50, 101)
    exported = sorted((tmp_path / "export").glob("*")) if fmt != "none" else []
    if fmt == "none":
        assert not (tmp_path / "export").exists()
        return
    assert [p.name.split("-")[0] for p in exported] == ["readings", "states"]
    assert not any(p.suffix == ".tmp" for p in exported)
    reader = pd.read_parquet if fmt == "parquet" else pd.read_csv
    df = reader(exported[0]) if fmt == "csv" else duckdb.sql(f"SELECT * FROM '{exported[0]}'").df()
    assert sorted(df["seq"]) == list(range(1, 101))


def test_retention_is_off_by_default_and_runs_at_most_every_check(tmp_path):
    path = tmp_path / "v.duckdb"
    init_db(path)
    assert load_config().store.retention_days == 0
    assert Retention(path, 0, tmp_path / "e")() is None
    t = [0.0]
    r = Retention(path, 1, tmp_path / "e", check_s=60, clock=lambda: t[0])
    assert r() == {}
    assert r() is None
    t[0] = 61
    assert r() == {}


class _Consumer:
    """Hands out a few readings, then nothing; records commits."""

    def __init__(self, messages):
        self.messages, self.commits = list(messages), 0

    def poll(self, max_records=1000, timeout=0.5):
        out, self.messages = self.messages[:max_records], self.messages[max_records:]
        if not out:
            time.sleep(min(timeout, 0.05))
        return out

    def commit(self, outputs=()):
        self.commits += 1


def test_the_store_loop_runs_retention_between_batches_and_keeps_a_failed_batch_uncommitted(tmp_path, monkeypatch):
    from lib.messages import reading_message
    from lib.store import sink

    path = tmp_path / "v.duckdb"
    init_db(path)
    now_us = int(time.time() * 1e6)
    consumer = _Consumer([reading_message("t", "1.5", "s1", i, now_us) for i in range(1, 11)])
    stop, calls = threading.Event(), []

    def maintenance():
        calls.append(1)
        if len(calls) >= 3:
            stop.set()

    assert sink.run_store(path, consumer, stop, flush_interval=0.05, maintenance=maintenance) == 10
    assert consumer.commits == 1 and len(calls) >= 3
    # The disk is full and a stop comes: the batch is neither written nor committed.
    monkeypatch.setattr(sink, "WRITE_BACKOFF_START_S", 0.01)

    def full(writer, batch):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lib.store.writer.Writer.write", full)
    consumer = _Consumer([reading_message("t", "2.5", "s1", 11, now_us)])
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert sink.run_store(path, consumer, stop, flush_interval=0.05) == 0
    assert consumer.commits == 0


class _Trickle(_Consumer):
    """Releases its messages one at a time, `every` seconds apart; records commits."""

    def __init__(self, messages, every):
        super().__init__(messages)
        self.every, self.next_at = every, time.monotonic()

    def poll(self, max_records=1000, timeout=0.5):
        if self.messages and time.monotonic() >= self.next_at:
            self.next_at = time.monotonic() + self.every
            return [self.messages.pop(0)]
        time.sleep(min(timeout, 0.005))
        return []


def _store_trickle(path, consumer, settle_s, **kw) -> int:
    """Run the store until the consumer has handed out everything, then `settle_s` more; returns
    what `run_store` returns (messages stored)."""
    from lib.store import sink

    stop = threading.Event()
    done = []
    t = threading.Thread(target=lambda: done.append(sink.run_store(path, consumer, stop, **kw)))
    t.start()
    deadline = time.monotonic() + 30
    while consumer.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(settle_s)
    stop.set()
    t.join(30)
    return done[0] if done else None


def test_under_light_load_small_batches_wait_for_the_quiet_interval(tmp_path):
    """Ten readings 30 ms apart: with writes every 50 ms they take several writes; allowed to wait
    0.5 s (they are far under QUIET_ROWS), one write holds them all. A batch of QUIET_ROWS state
    rows is written at the usual interval."""
    from lib.messages import Message, StatesBatch, reading_message
    from lib.store import sink

    now_us = int(time.time() * 1e6)
    counts = {}
    for quiet in (0.0, 0.5):
        path = tmp_path / f"q{quiet}.duckdb"
        init_db(path)
        consumer = _Trickle([reading_message("t", "1.5", "s1", i, now_us + i) for i in range(1, 11)], every=0.03)
        # settle past the quiet interval: the last batch is written
        assert _store_trickle(path, consumer, 0.7, flush_interval=0.05, quiet_flush_interval=quiet) == 10
        counts[quiet] = consumer.commits
        with read_db(path) as conn:
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 10
    assert counts[0.5] == 1 and counts[0.0] > 1, counts

    # Large batches do not wait: two of QUIET_ROWS state rows each, 0.2 s apart, are two writes.
    path = tmp_path / "big.duckdb"
    init_db(path)
    n = sink.QUIET_ROWS

    def big(first):
        readings = [
            Message("t", "t", "1.0", {"session": "s1", "seq": str(q), "ts_us": str(now_us + q)})
            for q in range(first, first + n)
        ]
        return StatesBatch.of_readings(
            "t", readings, [now_us + q for q in range(first, first + n)], {"dbscan": ("n" * n, [0.0] * n)}
        ).message()

    consumer = _Trickle([big(1), big(1 + n)], every=0.2)
    assert _store_trickle(path, consumer, 0.3, flush_interval=0.05, quiet_flush_interval=0.5) == 2
    assert consumer.commits == 2
    with read_db(path) as conn:
        assert conn.execute("SELECT count(*) FROM states").fetchone()[0] == 2 * n


def test_states_messages_replayed_inside_one_batch_are_stored_once(tmp_path):
    """A detector that restarts before the store wrote re-sends the states of readings already in
    the store's batch (a whole message, or its first part): each (reading, detector) is stored
    once, with the states and scores the message carried."""
    from lib.messages import Message, StatesBatch
    from lib.store.sink import add_message

    db = tmp_path / "v.duckdb"
    init_db(db)

    def message(seqs, sessions="s1"):
        readings = [
            Message("hum", "hum", "1.0", {"session": s, "seq": str(q), "ts_us": str(1_000_000 * q)})
            for q, s in zip(seqs, [sessions] * len(seqs) if isinstance(sessions, str) else sessions)
        ]
        codes = "".join("ian"[q % 3] for q in seqs)
        scores = [None if q % 3 == 0 else q / 100 for q in seqs]
        return StatesBatch.of_readings(
            "hum",
            readings,
            [1_000_000 * q for q in seqs],
            {"dbscan": (codes, scores), "rule:range": ("n" * len(seqs), [0.0] * len(seqs))},
        ).message()

    batch = Batch()
    for m in (message([1, 2, 3, 4]), message([1, 2, 3, 4]), message([3, 4, 5, 6]), message([7, 8], ["s1", "s2"])):
        add_message(batch, m)
    write_batch(db, batch)
    again = Batch()
    add_message(again, message([5, 6, 7, 8, 9]))  # a replay across batches: the watermarks
    write_batch(db, again)
    with read_db(db) as conn:
        rows = conn.execute(
            "SELECT session_id, seq, state, score FROM states WHERE detector = 'dbscan' ORDER BY session_id, seq"
        ).fetchall()
        rules = conn.execute(
            "SELECT count(*), count(DISTINCT (session_id, seq)) FROM states WHERE detector = 'rule:range'"
        ).fetchone()
    want = [
        ("s1", q, ["initializing", "anomaly", "normal"][q % 3], None if q % 3 == 0 else q / 100) for q in range(1, 10)
    ] + [("s2", 8, "normal", 0.08)]
    assert rows == want
    assert rules == (10, 10)


@pytest.mark.parametrize(
    "exc, cause",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
        # DuckDB gives no error number: its message quotes the system's text, and only that counts
        (duckdb.IOException('Could not write file "/data/vigie.duckdb.wal": Permission denied'), "permission denied"),
        (duckdb.IOException('Could not write file "/data/vigie.duckdb.wal": No space left on device'), "disk full"),
        (duckdb.IOException("Could not truncate file: Read-only file system"), "read-only file system"),
        (
            duckdb.TransactionException(
                'Failed to commit: Could not write file "v.duckdb.wal": No space left on device'
            ),
            "disk full",
        ),
        (duckdb.CatalogException("Table with name labels does not exist!"), None),
    ],
)
def test_write_errors_are_named_by_their_error_number_not_by_wording(exc, cause):
    assert error_cause(exc) == cause


def test_a_read_only_disk_is_reported_as_such_not_as_a_full_disk(tmp_path, caplog):
    """A real DuckDB file refused by the file system (a tmpfs remounted read-only, the store then
    reopening its file to write) is logged with its own cause; the message text used to make any "Could not write
    file" a full disk."""
    with small_tmpfs(tmp_path / "ro", 16) as mnt:
        db = mnt / "v.duckdb"
        init_db(db)
        writer = Writer(db)
        writer.write(_batch(1, 10, 1_700_000_000_000_000))
        writer.close()  # a file open for writing would keep the remount from happening
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        stop = threading.Event()

        def write(_path, batch):
            stop.set()  # one failure is enough to read what was logged
            writer.write(batch)

        assert write_until_done(db, _batch(11, 10, 1_700_000_001_000_000), stop, write) is False
        writer.close()
    logged = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert logged and logged[0].startswith("read-only file system:"), logged


def test_a_database_deleted_under_the_store_is_noticed_and_a_new_file_takes_the_next_writes(tmp_path, caplog):
    """`rm data/vigie.duckdb*` while the store runs: the next write says so loudly and goes to a
    new file at the path (it used to go on into the deleted file, lost at the next restart); the
    read socket, deleted with the files, is served again."""
    from lib.page import queries
    from lib.store.readserver import ReadServer, socket_dir

    db = tmp_path / "v.duckdb"
    init_db(db)
    writer = Writer(db)
    server = ReadServer(writer.connection, db).start()
    try:
        writer.write(_batch(1, 10, 1_700_000_000_000_000))
        for p in tmp_path.glob("v.duckdb*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        writer.write(_batch(11, 5, 1_700_000_001_000_000))
        assert writer.replaced == 1 and any("WAS DELETED" in r.getMessage() for r in caplog.records)
        assert server.check() is True and socket_dir(db).is_dir()
        with read_db(db) as conn:
            assert queries.totals(conn)["readings"] == 5  # the new file: the later writes, whole
        # replaced by someone else's file: the store stops rather than write into it
        db.unlink()
        db.write_bytes(b"SQLite format 3\0" + b"\0" * 100)
        with pytest.raises(DatabaseFileError):
            writer.write(_batch(16, 5, 1_700_000_002_000_000))
    finally:
        server.close()
        writer.close()
