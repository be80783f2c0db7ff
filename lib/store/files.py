"""Opening the DuckDB file, and telling what is wrong when it cannot be used.

DuckDB lets one process hold a file read-write, and a read-only open from another process fails
while it does ("Could not set lock on file"): `connect` retries for a while, because whoever holds
the file (a tool, a store shutting down) usually lets go soon. The checks here refuse what is not
Vigie's file, or is damaged, with a message that says what was found and what to do; none of them
writes to the file.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import duckdb

LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")
# Why a read or write failed, by the operating system's error number. An OSError carries it;
# DuckDB's IOException does not, but quotes the system's own text for it (strerror), which is what
# is matched here: never DuckDB's wording around it ("Could not write file" came with a
# permission error and was once taken for a full disk).
DISK_FULL, PERMISSION, READ_ONLY, GONE, IO_ERROR = (
    "disk full",
    "permission denied",
    "read-only file system",
    "file or folder gone",
    "I/O error",
)
ERRNO_CAUSES = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EFBIG: DISK_FULL,
    errno.EACCES: PERMISSION,
    errno.EPERM: PERMISSION,
    errno.EROFS: READ_ONLY,
    errno.ENOENT: GONE,
    errno.ESTALE: GONE,
    errno.EIO: IO_ERROR,
}
CORRUPT_MARKERS = ("Corrupt database", "not a valid DuckDB", "Could not read enough bytes", "checksum")
# DuckDB files carry "DUCK" at byte 8. Anything else at the database path is someone else's file:
# the store refuses to start rather than open (and possibly rewrite) it.
DUCKDB_MAGIC, DUCKDB_MAGIC_OFFSET = b"DUCK", 8
# No extension loading: a file that is not ours must fail to open, not make DuckDB try to download
# a reader for it (this machine, and many sites, have no internet). No external access: the
# database's own files are all a connection of ours touches, so no query (not even a read the store
# answers for another process) can read, write or attach another file.
CONNECT_CONFIG = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "enable_external_access": False,
}


class DatabaseFileError(RuntimeError):
    """The file at the database path is foreign, damaged, of another or a newer schema, or could
    not be upgraded; the message says which and what to do. The store stops (exit code 3, not
    restarted) instead of touching it."""


def is_lock_error(exc: BaseException) -> bool:
    return any(m in str(exc) for m in LOCK_MARKERS)


def error_cause(exc: BaseException) -> str | None:
    """DISK_FULL, PERMISSION, READ_ONLY, GONE or IO_ERROR for an operating-system failure under
    `exc`, by its error number; None when it is not one (a lock, a bad query, a damaged file)."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in ERRNO_CAUSES:
        return ERRNO_CAUSES[code]
    if isinstance(exc, duckdb.Error):  # an IOException, or a failed commit's TransactionException
        text = str(exc)
        for code, cause in ERRNO_CAUSES.items():
            if os.strerror(code) in text:
                return cause
        return IO_ERROR if isinstance(exc, duckdb.IOException) else None
    if isinstance(exc, OSError):
        return IO_ERROR
    return None


def is_disk_full(exc: BaseException) -> bool:
    return error_cause(exc) == DISK_FULL


def is_corruption(exc: BaseException) -> bool:
    return any(m in str(exc) for m in CORRUPT_MARKERS)


def connect(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying for `wait_s` seconds while another process holds it."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            if read_only or path.exists():
                return duckdb.connect(str(path), read_only=read_only, config=CONNECT_CONFIG)
            return _create(path)
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _create(path: Path) -> duckdb.DuckDBPyConnection:
    """A new database file, readable by this user only (DuckDB would make it 0644 by the usual
    umask: a `[paths] database` outside the 0700 data folder was readable by everyone)."""
    old = os.umask(0o077)
    try:
        conn = duckdb.connect(str(path), read_only=False, config=CONNECT_CONFIG)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return conn


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
    if head[DUCKDB_MAGIC_OFFSET : DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC)] != DUCKDB_MAGIC:
        raise DatabaseFileError(
            f"{path} exists but is {_describe(head)} ({path.stat().st_size} bytes), not Vigie's DuckDB "
            "database. Vigie never overwrites it: move the file away, or point [paths] data_dir elsewhere."
        )


def connect_checked(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """`connect`, with a file DuckDB cannot open reported as a DatabaseFileError (a lock held too
    long, or a full disk, is raised as it is: the file is not at fault)."""
    try:
        return connect(path, read_only, wait_s)
    except duckdb.Error as exc:
        if is_lock_error(exc) or error_cause(exc) in (DISK_FULL, PERMISSION, READ_ONLY, GONE):
            raise
        raise DatabaseFileError(
            f"{path} cannot be opened as a DuckDB database ({exc}); move it away "
            "or restore a backup. Vigie will not overwrite it."
        ) from None


def table_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """{table: [columns]} of the file's own tables."""
    found: dict[str, list[str]] = {}
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        " ORDER BY table_name, ordinal_position"
    ).fetchall():
        found.setdefault(table, []).append(column)
    return found


def scan_tables(conn: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Read every block of every table, so that a damaged block shows up at start-up, not hours
    later; raise DatabaseFileError if one does."""
    try:
        for table, columns in table_columns(conn).items():
            # Names come from the file's catalog, quoted. Hashing every column reads every block
            # (min/max may be answered from statistics without reading the data).
            names = ", ".join(_quote(c) for c in columns)
            conn.execute(f"SELECT count(*), sum(hash({names})) FROM {_quote(table)}").fetchall()
    except duckdb.Error as exc:
        if not is_corruption(exc):
            raise
        raise DatabaseFileError(
            f"{path} is damaged ({exc}); move it away or restore a backup. Vigie will not overwrite it."
        ) from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
