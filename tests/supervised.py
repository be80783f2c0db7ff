"""A real supervisord with stand-in programs, in a test's data folder: what the page's health
panel reads (lib.page.health) without starting the whole system."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lib.supervision import PASSWORD, SOCKET_NAME, USERNAME, rpc

CONF = """[supervisord]
nodaemon=true
logfile={data}/supervisord.log
pidfile={data}/supervisord.pid
childlogdir={data}

[unix_http_server]
file={data}/{socket}
chmod=0700
username={user}
password={password}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""
PROGRAM = """
[program:{name}]
command={command}
startsecs={startsecs}
startretries=0
autorestart=false
stopasgroup=true
killasgroup=true
"""
SLEEPER = f"{sys.executable} -c 'import time; time.sleep(3600)'"


@contextmanager
def supervisord(data_dir: Path, programs: dict[str, str], startsecs: int = 1):
    """supervisord running `programs` (name -> command) with its socket in `data_dir`; stopped
    (with its programs) on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "supervisord-test.conf"
    conf.write_text(
        CONF.format(data=data_dir, socket=SOCKET_NAME, user=USERNAME, password=PASSWORD)
        + "".join(PROGRAM.format(name=n, command=c, startsecs=startsecs) for n, c in programs.items())
    )
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "supervisord"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                states = rpc(data_dir).supervisor.getAllProcessInfo()
                if all(s["statename"] not in ("STARTING",) for s in states):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start: {(data_dir / 'supervisord.log').read_text()}")
            time.sleep(0.2)
        yield rpc(data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
