"""The serial path inside the real system under supervisord: the simulated board unplugged twice
(SIGUSR1) and the producer killed with -9 once while lines flow; supervisord restarts the producer,
the board waits for it, and the store ends up with every line the board wrote."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from lib.ingest.producer import ACK_FLUSH_INTERVAL_S
from tests.serial_rig import expected
from tests.system import System, wait_for

pytestmark = pytest.mark.e2e

N_LINES, RATE = 1500, 100.0


def test_unplugs_and_a_producer_crash_under_supervisord_lose_no_line(tmp_path):
    ledger = tmp_path / "ledger"
    env = {
        "VIGIE_SIMULATOR_SCENARIO": "data/scenarios/demo.toml",
        "VIGIE_SIMULATOR_RATE": str(RATE),
        "VIGIE_SIMULATOR_COUNT": str(N_LINES),
        "VIGIE_SIMULATOR_LEDGER": str(ledger),
        "VIGIE_SIMULATOR_UNPLUG_S": "1.0",
    }
    with System(tmp_path, env) as system:
        count = lambda: system.count()  # noqa: E731
        wait_for(lambda: count() > 200, 90, what="readings flowing")
        os.kill(system.pid("simulator"), signal.SIGUSR1)
        wait_for(
            lambda: sum(g[2] is not None for g in system.ask("gap_list") or []) >= 1, 30, what="the first gap closed"
        )
        before = count()
        wait_for(lambda: count() > before + 100, 30, what="readings flowing again")
        os.kill(system.pid("producer"), signal.SIGKILL)
        wait_for(lambda: system.count("sessions") >= 2, 30, what="a new producer session")
        before = count()
        wait_for(lambda: count() > before + 100, 30, what="readings flowing again")
        os.kill(system.pid("simulator"), signal.SIGUSR1)
        wait_for(lambda: count() >= N_LINES, 90, what=f"{N_LINES} readings")
        time.sleep(1.0)  # anything extra (a duplicate) would land by now
        # Before the stop: stopping the simulator first is one more (true) gap for the producer.
        gaps = [(g[0], g[2] is not None) for g in system.ask("gap_list")]
        rc = system.stop()
    assert rc == 0, system.log()[-3000:]

    good, bad = expected(ledger)
    assert sum(good.values()) == N_LINES and not bad
    stored = Counter(
        {(s, v): n for s, v, n in system.query("SELECT sensor, value, count(*) FROM readings GROUP BY ALL")}
    )
    assert not good - stored, "lines the board wrote are missing"
    assert sum((stored - good).values()) <= RATE * (ACK_FLUSH_INTERVAL_S + 0.1), (
        "more duplicates than one flush's worth"
    )
    sessions = [s for (s,) in system.query("SELECT session_id FROM sessions ORDER BY started_at")]
    assert gaps == [(sessions[0], True), (sessions[1], True)], "one closed gap per unplug, in its session"
