"""Retention: readings older than `[store] retention_days` leave the DuckDB file, optionally
exported first (Parquet or CSV under `<data>/export/`), without stopping anything.

It runs inside the store, between two batches, because the store is the only process that writes
the file. One transaction exports and deletes; the export is written under a temporary name and
renamed once the delete is committed, so a crash in between leaves either the rows in the database
or a `.tmp` export holding them, never neither.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lib.store import rollups
from lib.store.files import connect

log = logging.getLogger(__name__)

# Tables with a reading time; sessions, gaps, truth and labels are small and kept. The tables
# derived from them (lib.store.rollups) follow them, without an export.
TABLES = ("readings", "states", "rejects")
FORMATS = ("parquet", "csv", "none")


def prune(
    db_path: Path, older_than: datetime, export_dir: Path | None, fmt: str = "parquet", wait_s: float = 60.0
) -> dict[str, int]:
    """Delete rows with `ts < older_than` (naive UTC) from TABLES, exporting them first unless
    `fmt` is "none". Returns {table: rows removed}."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    stamp = f"{older_than:%Y%m%dT%H%M%S}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
    removed: dict[str, int] = {}
    renames: list[tuple[Path, Path]] = []
    conn = connect(Path(db_path), False, wait_s)
    try:
        conn.execute("BEGIN")
        for table in TABLES:
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE ts < ?", [older_than]).fetchall()[0][0]
            if not n:
                continue
            if fmt != "none":
                export_dir.mkdir(parents=True, exist_ok=True)
                final = export_dir / f"{table}-before-{stamp}.{fmt}"
                tmp = final.with_name(final.name + ".tmp")
                _export(conn.sql(f"SELECT * FROM {table} WHERE ts < ? ORDER BY ts", params=[older_than]), tmp, fmt)
                renames.append((tmp, final))
            conn.execute(f"DELETE FROM {table} WHERE ts < ?", [older_than])
            removed[table] = n
        if removed:
            rollups.prune(conn, older_than)
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except Exception:  # the connection may already be gone; the rollback is best effort
            log.debug("rollback after a failed prune failed too", exc_info=True)
        for tmp, _ in renames:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    for tmp, final in renames:
        tmp.rename(final)
    return removed


def _export(rows: duckdb.DuckDBPyRelation, target: Path, fmt: str) -> None:
    """Write a query's rows to `target` from Python (pyarrow), batch by batch: the store's
    connection has DuckDB's file access off (lib.store.files.CONNECT_CONFIG), so no COPY."""
    reader = rows.to_arrow_reader(100_000)
    if fmt == "parquet":
        with pq.ParquetWriter(target, reader.schema) as out:
            for batch in reader:
                out.write_batch(batch)
    else:
        with pa_csv.CSVWriter(target, reader.schema) as out:
            for batch in reader:
                out.write_batch(batch)


class Retention:
    """Called by the store between batches; prunes at most every `check_s` seconds."""

    def __init__(
        self,
        db_path: Path,
        days: float,
        export_dir: Path,
        fmt: str = "parquet",
        check_s: float = 600.0,
        clock=time.monotonic,
    ):
        self.db_path, self.days, self.export_dir, self.fmt = Path(db_path), days, Path(export_dir), fmt
        self.check_s, self.clock = check_s, clock
        self._next = clock()  # first check soon after start-up

    def __call__(self) -> dict[str, int] | None:
        if self.days <= 0 or self.clock() < self._next:
            return None
        self._next = self.clock() + self.check_s
        cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=self.days)
        try:
            removed = prune(self.db_path, cutoff, self.export_dir, self.fmt)
        except Exception as exc:  # a failed prune (disk full while exporting) must not stop storing
            log.error("retention: pruning rows before %s failed (%s); will retry in %.0fs", cutoff, exc, self.check_s)
            return None
        if removed:
            log.info(
                "retention: removed rows older than %s: %s%s",
                cutoff,
                ", ".join(f"{t} {n}" for t, n in removed.items()),
                f" (exported to {self.export_dir})" if self.fmt != "none" else "",
            )
        return removed
