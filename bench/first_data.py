"""From a fresh clone to data on the page: `python -m bench.first_data [--keep-venv]`.

Clones this repository's committed `main` into a temporary folder (as a new user would get it),
runs `make run` there with nothing prepared, and prints when each step was reached, counted from
the `make run`: the virtualenv installed, the page answering, the first reading in the store,
the first reading judged. Then Ctrl-C, as an operator would, and how long the stop took.

Not part of `make bench` (it installs the requirements into a new virtualenv each time).
`--keep-venv` links this checkout's .venv into the clone instead, which times a second start.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb

from lib.config import PROJECT_ROOT
from tests.system import free_port, stored


def _page_answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
    except OSError:
        return False


def _count(db: Path, what: str) -> int:
    try:
        return stored(db, what)
    except (OSError, duckdb.Error):  # the store starting: its socket or the file not ready yet
        return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep-venv", action="store_true", help="reuse this checkout's .venv (a second start)")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vigie-first-data-") as tmp:
        clone = Path(tmp) / "vigie"
        subprocess.run(["git", "clone", "-q", "--branch", "main", str(PROJECT_ROOT), str(clone)], check=True)
        head = subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if args.keep_venv:
            (clone / ".venv").symlink_to(PROJECT_ROOT / ".venv")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
        env["VIGIE_APP_PORT"] = str(port)
        log = open(Path(tmp) / "make-run.log", "wb")
        print(
            f"fresh clone of main {head}; `make run` (page on port {port}), load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        t0 = time.monotonic()
        make = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        db = clone / "data" / "vigie.duckdb"
        steps = {
            "virtualenv installed": lambda: (clone / ".venv" / ".stamp-requirements").exists(),
            "page answers": lambda: _page_answers(port),
            "first reading stored": lambda: _count(db, "readings") > 0,
            "first reading judged": lambda: _count(db, "states") > 0,
        }
        reached: dict[str, float] = {}
        try:
            while len(reached) < len(steps) and time.monotonic() - t0 < args.timeout:
                if make.poll() is not None:
                    break
                for name, check in steps.items():
                    if name not in reached and check():
                        reached[name] = time.monotonic() - t0
                        print(f"  {reached[name]:6.1f} s  {name}", flush=True)
                time.sleep(0.1)
        finally:
            t1 = time.monotonic()
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGINT)
            try:
                rc = make.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                rc = make.wait()
            log.close()
        print(f"  Ctrl-C: stopped in {time.monotonic() - t1:.1f} s, make exited {rc}")
        missing = [n for n in steps if n not in reached]
        if missing:
            print(f"not reached: {', '.join(missing)}; the end of make run's output:")
            print((Path(tmp) / "make-run.log").read_text(errors="replace")[-3000:])
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
