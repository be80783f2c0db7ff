"""Each producer's state, for the page: one small JSON file per producer in the run folder.

The page cannot ask a producer anything (it runs in another process, maybe with no board at all),
so each producer writes what it is doing to `<data>/run/producer-<name>.json`, replacing the file
atomically (write a temporary file, then rename), and the page reads the files.

Writing (the producer only)::

    status = StatusWriter(config.run_dir, name="ttyACM0", port="/dev/ttyACM0")
    status.set(WAITING, detail="no such port: /dev/ttyACM0")   # written at once
    status.lines(12, at=time.time())     # counters: written at most every WRITE_EVERY_S
    status.set(BUFFERING, detail="disk full", buffered_lines=340)
    status.close()                       # state STOPPED

Reading (the page, tools)::

    for s in read_statuses(config.run_dir):
        s.name, s.port, s.state, s.detail, s.since, s.lines_read, s.last_line_at,
        s.buffered_lines, s.pid, s.program, s.session, s.updated_at, s.alive

`state` is one of STATES; `since` is when it entered that state; times are Unix seconds (UTC).
`alive` is False when the process that wrote the file is gone (a producer killed with -9, or
FATAL in supervisord): the page should then not believe `state`. The writer never raises: a
status that cannot be written (full disk) is logged once and retried at the next change.

>>> import tempfile; d = Path(tempfile.mkdtemp())
>>> w = StatusWriter(d, "arduino", "/dev/ttyACM0"); w.set(CONNECTED); w.lines(3, at=1.5); w.flush()
>>> [(s.name, s.state, s.lines_read, s.alive) for s in read_statuses(d)]
[('arduino', 'connected', 3, True)]
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

CONNECTED = "connected"  # the port is open and being read
WAITING = "waiting for board"  # no such port yet (not plugged in, simulator starting)
PORT_BUSY = "port busy"  # another program holds the port (detail names it)
RECONNECTING = "reconnecting"  # the port was lost after lines were read from it
BUFFERING = "buffering (disk full)"  # lines held in memory while the transport cannot take them
FAILED = "failed"  # a lasting problem (permission denied, not a serial device)
STOPPED = "stopped"  # the producer ended cleanly
STATES = (CONNECTED, WAITING, PORT_BUSY, RECONNECTING, BUFFERING, FAILED, STOPPED)

# Counters change with every line; the page refreshes every 2 s, so once a second is enough.
WRITE_EVERY_S = 1.0
PREFIX, SUFFIX = "producer-", ".json"


def safe_name(text: str) -> str:
    """A port or board name as it can appear in a file name and a supervisord program name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "port"


def status_path(run_dir: str | os.PathLike, name: str) -> Path:
    return Path(run_dir) / f"{PREFIX}{safe_name(name)}{SUFFIX}"


@dataclass(frozen=True)
class ProducerStatus:
    name: str
    port: str
    state: str
    since: float
    detail: str = ""
    lines_read: int = 0
    last_line_at: float | None = None
    buffered_lines: int = 0
    pid: int = 0
    program: str = ""  # the supervisord program running the producer
    session: str = ""
    updated_at: float = 0.0
    alive: bool = True  # computed by the reader: the writing process still runs


class StatusWriter:
    """The producer's side: keeps the current status and writes it (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike, name: str, port: str, session: str = "", clock=time.time):
        self.path = status_path(run_dir, name)
        self.clock = clock
        now = clock()
        self._status = {
            "name": safe_name(name),
            "port": port,
            "state": WAITING,
            "since": now,
            "detail": "",
            "lines_read": 0,
            "last_line_at": None,
            "buffered_lines": 0,
            "pid": os.getpid(),
            "program": os.environ.get("SUPERVISOR_PROCESS_NAME", ""),
            "session": session,
            "updated_at": now,
        }
        self._written = 0.0
        self._dirty = True
        self._failing = False

    @property
    def state(self) -> str:
        return self._status["state"]

    def set(
        self,
        state: str | None = None,
        *,
        detail: str | None = None,
        port: str | None = None,
        buffered_lines: int | None = None,
        session: str | None = None,
    ) -> None:
        """Change what the page shows and write it now (when anything changed)."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown producer state {state!r}")
        s = self._status
        changed = False
        if state is not None and state != s["state"]:
            s["state"], s["since"] = state, self.clock()
            changed = True
        for key, value in (
            ("detail", detail),
            ("port", port),
            ("buffered_lines", buffered_lines),
            ("session", session),
        ):
            if value is not None and value != s[key]:
                s[key] = value
                changed = True
        if changed or self._dirty:
            self._dirty = True
            self.flush()

    def lines(self, n: int, at: float) -> None:
        """`n` lines read in all so far, the last at `at`; written at most every WRITE_EVERY_S."""
        if n != self._status["lines_read"]:
            self._status["lines_read"], self._status["last_line_at"] = n, at
            self._dirty = True
        if self._dirty and self.clock() - self._written >= WRITE_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self._status["updated_at"] = self._written = self.clock()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._status), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) and self._rewrite_in_place():
                self._dirty = self._failing = False
                return
            # The status is for display only: never let it stop the reading of a board.
            if not self._failing:
                log.error("cannot write the producer status %s: %s", self.path, exc)
            self._failing = True
            return
        self._dirty = self._failing = False

    def _rewrite_in_place(self) -> bool:
        """Overwrite the existing file's bytes (padded with spaces to its length): no new block is
        needed, so a full disk still takes it, and the page can show "buffering (disk full)"."""
        data = json.dumps(self._status).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return False
        try:
            old = os.fstat(fd).st_size
            os.pwrite(fd, data.ljust(old), 0)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def close(self, state: str = STOPPED) -> None:
        self.set(state, detail="")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process with that id: it exists
    # A dead child not yet reaped by its supervisor is a zombie: gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def read_statuses(run_dir: str | os.PathLike) -> list[ProducerStatus]:
    """Every producer's last written status, by name. A file that cannot be parsed is reported
    as a status in state FAILED with the reason, so a broken producer does not vanish."""
    known = {f.name for f in fields(ProducerStatus)} - {"alive"}
    out = []
    for path in sorted(Path(run_dir).glob(f"{PREFIX}*{SUFFIX}")):
        name = path.name[len(PREFIX) : -len(SUFFIX)]
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            status = ProducerStatus(**{k: v for k, v in raw.items() if k in known})
        except FileNotFoundError:
            continue  # removed between the listing and the read
        except (OSError, ValueError, TypeError) as exc:
            out.append(
                ProducerStatus(
                    name=name,
                    port="",
                    state=FAILED,
                    since=0.0,
                    detail=f"unreadable status file {path.name}: {exc}",
                    alive=False,
                )
            )
            continue
        out.append(ProducerStatus(**{**status.__dict__, "alive": _alive(status.pid)}))
    return out
