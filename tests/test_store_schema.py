"""The database's schema version: old files are upgraded by ordered migrations and keep every row,
a failed migration leaves the file as it was, a file from a newer Vigie is refused untouched.

tests/fixtures/before-versions.duckdb was written by the store as it was before schema versions
(commit 15d22bf), with `tests.appdata.prepare(path, now=datetime(2026, 11, 28, 12), per_sensor=60)`
into a file created with 16 KiB blocks (`ATTACH ... (BLOCK_SIZE 16384)`) to keep it small. It is
never rewritten: each test works on a copy.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from lib.store import schema
from lib.store.batch import Batch
from lib.store.files import DatabaseFileError
from lib.store.reader import read_db
from lib.store.schema import MIGRATIONS, Migration, current_version, init_db, open_checked
from lib.store.writer import write_batch

FIXTURE = Path(__file__).parent / "fixtures" / "before-versions.duckdb"
TABLES = ("sessions", "readings", "states", "watermarks", "rejects", "gaps", "truth", "labels")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_fixture(tmp_path) -> Path:
    path = tmp_path / "vigie.duckdb"
    shutil.copyfile(FIXTURE, path)
    return path


def _rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the first release, sorted."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    finally:
        conn.close()


def _versions(path: Path) -> list[int]:
    with read_db(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]


def test_migrations_are_numbered_one_by_one():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_a_file_from_before_versions_opens_upgrades_and_keeps_every_row(tmp_path):
    path = _copy_fixture(tmp_path)
    before = _rows(path)
    assert all(before[t] for t in TABLES), {t: len(r) for t, r in before.items()}
    open_checked(path)
    assert _versions(path) == list(range(1, current_version() + 1))
    assert _rows(path) == before
    backup = path.with_name("vigie.duckdb.pre-v1.bak")
    assert _digest(backup) == _digest(FIXTURE)
    # Up to date: opening again copies nothing and changes nothing.
    open_checked(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vigie.duckdb", "vigie.duckdb.pre-v1.bak"]
    # and the store writes to it as to a new file
    batch = Batch()
    batch.readings[("after-upgrade", 1)] = ("humidite", 1_800_000_000_000_000, 40.5)
    write_batch(path, batch)
    with read_db(path) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == len(before["readings"]) + 1


def test_adding_a_table_and_a_column_is_one_migration(tmp_path, monkeypatch):
    """A migration appended to MIGRATIONS runs once on an old file and on a current one, after a
    copy of each; rows are kept and the new column has its default."""
    current = _copy_fixture(tmp_path)
    init_db(current)  # now at the current version
    old = tmp_path / "old.duckdb"
    shutil.copyfile(FIXTURE, old)
    before = _rows(old)
    n = current_version() + 1
    added = Migration(
        n,
        "rollups; readings.quality",
        """
        CREATE TABLE rollups (sensor VARCHAR NOT NULL, minute TIMESTAMP NOT NULL, n BIGINT NOT NULL,
                              PRIMARY KEY (sensor, minute));
        ALTER TABLE readings ADD COLUMN quality VARCHAR DEFAULT 'ok';
        INSERT INTO rollups SELECT sensor, date_trunc('minute', ts), count(*) FROM readings GROUP BY ALL;
    """,
    )
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS + (added,))
    for path in (current, old):
        open_checked(path)
        assert _versions(path)[-1] == n
        with read_db(path) as conn:
            assert conn.execute("SELECT DISTINCT quality FROM readings").fetchall() == [("ok",)]
            assert (
                conn.execute("SELECT sum(n) FROM rollups").fetchone()[0]
                == conn.execute("SELECT count(*) FROM readings").fetchone()[0]
                > 0
            )
    assert current.with_name(f"vigie.duckdb.pre-v{n}.bak").exists()
    assert old.with_name("old.duckdb.pre-v1.bak").exists()
    conn = duckdb.connect(str(old), read_only=True)
    try:
        kept = {
            t: conn.execute(
                f"SELECT {'* EXCLUDE (quality)' if t == 'readings' else '*'} FROM {t} ORDER BY ALL"
            ).fetchall()
            for t in TABLES
        }
    finally:
        conn.close()
    assert kept == before


def test_a_failing_migration_is_named_and_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """Also with a write-ahead log beside the file (a store killed before its checkpoint): opening
    the file for writing folds the log in, so the file is put back from the copy, log and all."""
    path = _copy_fixture(tmp_path)
    wal = path.with_name("vigie.duckdb.wal")
    conn = duckdb.connect(str(path))
    conn.execute("PRAGMA disable_checkpoint_on_shutdown")
    conn.execute("INSERT INTO readings VALUES ('in-the-log', 1, 'humidite', TIMESTAMP '2026-11-28 12:00:00', 1.0)")
    conn.close()
    digests = (_digest(path), _digest(wal))
    n = current_version() + 1
    # Writes a good deal (DuckDB may put it in the file before the commit), then fails.
    broken = Migration(
        n,
        "copy readings to history",
        """
        CREATE TABLE history AS SELECT * FROM readings;
        INSERT INTO history SELECT session_id, i, sensor, ts, value FROM readings, range(200) t(i);
        SELECT * FROM no_such_table;
    """,
    )
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS + (broken,))
    with pytest.raises(DatabaseFileError) as err:
        open_checked(path)
    message = str(err.value)
    assert f"migration {n} (copy readings to history)" in message and "no_such_table" in message, message
    assert "is as it was" in message and str(path) in message
    assert (_digest(path), _digest(wal)) == digests
    backup = path.with_name("vigie.duckdb.pre-v1.bak")
    assert (_digest(backup), _digest(backup.with_name(backup.name + ".wal"))) == digests
    # Fixed, the upgrade goes through with the logged row; the first copy is kept, a second taken.
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    open_checked(path)
    assert _versions(path) == list(range(1, n))
    with read_db(path) as conn:
        assert conn.execute("SELECT count(*) FROM readings WHERE session_id = 'in-the-log'").fetchone()[0] == 1
    assert len(list(tmp_path.glob("vigie.duckdb.pre-v1*.bak"))) == 2


def test_a_file_from_a_newer_vigie_is_refused_untouched(tmp_path):
    path = tmp_path / "vigie.duckdb"
    init_db(path)
    newer = current_version() + 3
    conn = duckdb.connect(str(path))
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', now())", [newer])
    conn.close()
    digest = _digest(path)
    with pytest.raises(DatabaseFileError) as err:
        open_checked(path)
    message = str(err.value)
    assert f"schema version {newer}" in message and "newer Vigie" in message and str(path) in message, message
    assert _digest(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vigie.duckdb"]
