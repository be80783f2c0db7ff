"""Run the real system (supervisord and every program) in a temporary data folder, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from lib.config import PROJECT_ROOT

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def query(db: Path, sql: str, params=()):
    """SQL on the DuckDB file, read-only: once the store has stopped (a running store answers
    named queries only: use `ask`)."""
    from lib.store.reader import read_db

    if not Path(db).exists():
        return None
    try:
        with read_db(db, wait_s=10) as conn:
            return conn.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        if "not a valid DuckDB" in str(exc) or "No such file" in str(exc):
            return None
        raise


def ask(db: Path, name: str, *args):
    """A named read query of lib.page.queries, the way the page reads: through the store when it
    runs, else on the file. None while there is no database yet."""
    from lib.page import queries
    from lib.store.reader import read_db

    if not Path(db).exists():
        return None
    try:
        with read_db(db, wait_s=10) as conn:
            return getattr(queries, name)(conn, *args)
    except duckdb.Error as exc:
        if "not a valid DuckDB" in str(exc) or "No such file" in str(exc):
            return None
        raise


def stored(db: Path, what: str = "readings") -> int:
    """Readings (or states, rejects, sessions) stored so far; 0 before there is a database."""
    found = ask(db, "totals")
    return found[what] if found else 0


class System:
    """`python -m workers.launch` with its own data folder and environment."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        self.data = Path(tmp) / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.app_port = free_port()
        self.env = dict(
            os.environ,
            VIGIE_PATHS_DATA_DIR=str(self.data),
            VIGIE_DATA_DIR=str(self.data),
            VIGIE_APP_PORT=str(self.app_port),
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )
        self.log_path = Path(tmp) / "system.log"
        self.proc: subprocess.Popen | None = None

    @property
    def db(self) -> Path:
        return self.data / "vigie.duckdb"

    def start(self) -> "System":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PY, "-m", "workers.launch"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [str(Path(PY).parent / "supervisorctl"), "-c", str(PROJECT_ROOT / "supervisord.conf"), *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout + out.stderr

    def supervisord_pid(self) -> int:
        """supervisord runs as launch's child (launch stays to turn Ctrl-C into a shutdown request)."""
        pidfile = self.data / "supervisord.pid"
        return int(pidfile.read_text()) if pidfile.exists() else 0

    def pid(self, program: str) -> int:
        out = self.ctl("pid", program).strip()
        return int(out) if out.isdigit() else 0

    def query(self, sql: str, params=()):
        return query(self.db, sql, params)

    def ask(self, name: str, *args):
        return ask(self.db, name, *args)

    def count(self, what: str = "readings") -> int:
        return stored(self.db, what)

    def stop(self, timeout: float = 90) -> int:
        """Ctrl-C, as an operator would; returns supervisord's exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            # Whatever happened, leave no process behind.
            if self.proc and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def small_tmpfs(mnt: Path, size_mb: int):
    """A `size_mb` MB tmpfs mounted at `mnt` (made here) for a full or read-only disk, unmounted
    after; the test is skipped where mounting needs a root this machine does not give."""
    import pytest

    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN): {out.stderr.strip()}")
    # The ballast is made now, while the disk has room: on a full tmpfs even creating an empty
    # file can fail (ENOSPC on the inode), and then there would be nothing to delete to free it.
    (mnt / "ballast").touch()
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path, chunk: int = 64 * 1024) -> Path:
    """Grow the ballast file `small_tmpfs` made until the file system is full; returns it (delete it
    to free the space)."""
    ballast = folder / "ballast"
    with open(ballast, "ab") as f:
        try:
            while True:
                f.write(b"\0" * chunk)
                f.flush()
        except OSError:
            pass
    return ballast
