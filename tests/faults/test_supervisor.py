"""kill -9 of supervisord itself: its programs stop with it, a launch over a live system refuses
and names what runs, and a relaunch on the same folder carries on with nothing stored twice.

Before: every program outlived supervisord, and a second `make run` on the folder ran two
producers on one port beside a crash-looping store (18 of 5,981 readings lost).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from lib.config import PROJECT_ROOT
from lib.supervision import running_programs
from tests.faults.common import ledger_lines, lost_and_duplicated, report, sim_env, wait_all_judged
from tests.system import PY, System, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(900)]

RATE = 100.0


def test_programs_die_with_supervisord_and_a_second_launch_refuses(tmp_path):
    ledger = tmp_path / "ledger.txt"
    with System(tmp_path, sim_env(ledger, RATE, int(RATE * 600))) as system:
        wait_for(lambda: system.count("states") > 100, 180, interval=0.5, what="data flowing")
        names = {name for name, _ in running_programs(system.data)}
        assert names >= {"supervisord", "store", "detector", "app"} and any(n.startswith("producer") for n in names)
        second = subprocess.run(
            [PY, "-m", "workers.launch"], cwd=PROJECT_ROOT, env=system.env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1, second.stderr
        assert "already runs on" in second.stderr and "producer (pid" in second.stderr, second.stderr
        clean = subprocess.run(
            ["make", "-s", "clean-data"], cwd=PROJECT_ROOT, env=system.env, capture_output=True, text=True, timeout=120
        )
        assert clean.returncode != 0 and "already runs on" in clean.stderr, clean.stderr
        t0 = time.monotonic()
        supervisord = int((system.data / "supervisord.pid").read_text())
        assert ("supervisord", supervisord) in running_programs(system.data)
        os.kill(supervisord, signal.SIGKILL)
        left = wait_for(
            lambda: not running_programs(system.data) or None,
            150,
            interval=0.2,
            what="every program gone after supervisord's kill -9",
        )
        gone_s = time.monotonic() - t0
        assert left
    written_at_kill = ledger_lines(ledger)
    # The same folder again: it starts (nothing of the old system is left) and carries on.
    assert system.proc.wait(30) is not None  # launch ends with its supervisord
    relaunched = datetime.now(timezone.utc).replace(tzinfo=None)
    with System(tmp_path, sim_env(ledger, RATE, int(RATE * 20))) as again:
        t1 = time.monotonic()
        wait_for(
            lambda: ((again.ask("newest") or {}).get("readings") or relaunched) > relaunched,
            180,
            interval=0.5,
            what="the relaunched system storing a new reading",
        )
        back_s = time.monotonic() - t1
        wait_for(lambda: ledger_lines(ledger) >= written_at_kill + RATE * 20, 120, what="the second run written")
        again.ctl("stop", "simulator")
        wait_all_judged(again, again.db, ledger_lines(ledger))
        lost, dup, judged = lost_and_duplicated(again.db, ledger)
        assert again.stop() == 0
    report(
        "kill -9 of supervisord, then `make run` again on the same folder",
        1,
        lost,
        dup,
        [back_s],
        note=f"every program gone {gone_s:.1f}s after the kill (SIGTERM from the kernel: each flushed); "
        f"a launch over the live system and `make clean-data` refused; judged {judged}; "
        "recovery = relaunch to storing",
    )
    assert dup == 0
    # What the board wrote while its reader was stopping is all a kill of everything can cost
    # (a real board does not re-send either); the simulator stops with the rest.
    assert lost <= RATE * 2, f"{lost} readings lost"
    assert all(j == {"missing": 0, "extra": 0} for j in judged.values()), judged
