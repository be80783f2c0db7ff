"""Talking to the supervisord of a running Vigie, through its control socket in the data folder.

`rpc(data_dir)` is supervisord's XML-RPC interface over that socket, with supervisor's own client
transport: `rpc(data).supervisor.getAllProcessInfo()` gives every program's state as
`supervisorctl status` does (`statename`: RUNNING, STARTING, BACKOFF, FATAL, ...), and
`rpc(data).supervisor.shutdown()` stops the system as Ctrl-C does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import xmlrpc.client
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "supervisor.sock"
# The socket's file mode (0700, in a 0700 data folder) is what keeps other users out. supervisord
# logs a CRIT line at every start for a socket without a username, so supervisord.conf sets this
# pair in [unix_http_server] and [supervisorctl]; it is not a secret.
USERNAME, PASSWORD = "vigie", "vigie"
PR_SET_PDEATHSIG = 1


def rpc(data_dir: str | os.PathLike) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(USERNAME, PASSWORD, f"unix://{Path(data_dir) / SOCKET_NAME}")
    # The host is a placeholder: the transport connects to the socket.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux; elsewhere a
    no-op logged once). For a child between fork and exec (`preexec_fn`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            log.info("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.info("no prctl here (%s): supervisord will not stop by itself if launch is killed", exc)


def die_with_supervisor() -> None:
    """Under supervisord, have the kernel send this process SIGTERM when supervisord dies (Linux
    prctl PR_SET_PDEATHSIG): SIGTERM is the usual graceful stop, so the batch in hand is flushed.
    Without it a kill -9 of supervisord left every program running, and the next `make run` on the
    same folder met a second producer on the same port and a store holding the file."""
    if not os.environ.get("SUPERVISOR_ENABLED"):
        return  # started by hand or by a test: its parent's end is not ours
    die_with_parent(signal.SIGTERM)
    # supervisord may have died between starting this process and the request above.
    if not _is_supervisord(os.getppid()):
        log.warning("supervisord is gone already: stopping")
        os.kill(os.getpid(), signal.SIGTERM)


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _is_supervisord(pid: int) -> bool:
    """supervisord itself (its entry script, run by python), not a tool that names it: a
    supervisorctl's "-c supervisord.conf" once made a relaunch refuse over a system not started yet."""
    return any(Path(a).name == "supervisord" for a in _argv(pid)[:2])


def running_programs(data_dir: Path) -> list[tuple[str, int]]:
    """(program, pid) of every process of a Vigie system running on `data_dir` (supervisord and
    its programs, orphans included), from /proc: each carries VIGIE_DATA_DIR in its environment
    (set by workers.launch) and supervisord names its programs in SUPERVISOR_PROCESS_NAME."""
    want = str(Path(data_dir).resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = dict(item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue  # gone, or another user's
        data = env.get(b"VIGIE_DATA_DIR")
        if data is None or str(Path(data.decode(errors="replace")).resolve()) != want:
            continue
        name = env.get(b"SUPERVISOR_PROCESS_NAME", b"").decode(errors="replace")
        if not name:
            if not _is_supervisord(int(entry.name)):
                continue  # a shell or tool that has the variable, not one of ours
            name = "supervisord"
        found.append((name, int(entry.name)))
    return sorted(found)
