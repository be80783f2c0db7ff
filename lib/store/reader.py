"""The read side: a short-lived connection for queries, wherever the file is held.

DuckDB lets no other process open the file while the store holds it for writing, so reads go
through the store when it runs (it answers named queries on a socket: lib.store.readserver) and
open the file read-only otherwise (tests, tools, a stopped system).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from lib.store.files import connect, is_lock_error
from lib.store.readserver import RemoteConnection


@contextmanager
def read_db(path: Path, wait_s: float = 5.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read connection: through the store when it runs (it holds the file; see
    lib.store.readserver: named queries only), else the file opened read-only, retried while
    another process holds it. Read with the functions of lib.page.queries, which work on both."""
    path = Path(path)
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        conn = None
        try:
            conn = RemoteConnection(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # no store runs (or one was killed and left its socket): read the file
        if conn is None:
            try:
                conn = connect(path, True, 0.0)
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
