"""A producer killed with -9 mid-stream and started again (as supervisord does): the board waits
for the new reader and sends again what the dead one had not acknowledged as stored, so no line
the board wrote is lost. A line is stored twice only when the kill falls between the transport's
commit and the acknowledgement (the few milliseconds of the commit's fsync): at most one flush's
worth of lines per kill, rarely (a 3 ms fsync in every 200 ms flush)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

from lib.config import PROJECT_ROOT
from lib.ingest.producer import ACK_FLUSH_INTERVAL_S
from lib.ingest.simulator import SignalModel, load_scenario, scenario_ticks
from tests.serial_rig import Rig, expected, ledger_lines
from tests.system import wait_for

DEMO = PROJECT_ROOT / "data/scenarios/demo.toml"
LINES, RATE, KILLS = 3000, 300.0, 4


def test_kill_9_of_the_producer_loses_and_duplicates_nothing(tmp_path):
    with Rig(tmp_path) as rig:
        board = rig.board()
        ledger = tmp_path / "ledger"
        proc = rig.producer_process(board.link, "--ack")
        rig.play(board, scenario_ticks(SignalModel(load_scenario(DEMO), seed=9), RATE), ledger, count=LINES)
        rnd = random.Random(1)
        for _ in range(KILLS):
            # Kill while the producer is reading: once it has the port open, at a random moment.
            wait_for(board.reader_present, 30, 0.02, what="the producer to open the port")
            time.sleep(rnd.uniform(0.2, 1.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(rnd.uniform(0.2, 1.0))  # supervisord's restart delay
            proc = rig.producer_process(board.link, "--ack")
        wait_for(lambda: len(ledger_lines(ledger)) == LINES, 60, 0.1, what=f"the board to write {LINES} lines")
        assert board.drain(10), "the last producer did not take every line"
        time.sleep(0.3)
        rig.stop_all()
        assert proc.wait() == 0
    rig.store()

    good, bad = expected(ledger)
    assert sum(good.values()) == LINES and not bad
    stored = Counter({(s, v): n for s, v, n in rig.query("SELECT sensor, value, count(*) FROM readings GROUP BY ALL")})
    lost, extra = good - stored, stored - good
    assert not lost, f"lost {sum(lost.values())} lines; resent {board.resent} bytes"
    # One flush's worth (ACK_FLUSH_INTERVAL_S) plus the acknowledgement's way back, per kill, at most.
    assert sum(extra.values()) <= KILLS * RATE * (ACK_FLUSH_INTERVAL_S + 0.1), f"duplicated {sum(extra.values())} lines"
    assert len(rig.query("SELECT * FROM sessions")) == KILLS + 1
    assert rig.query("SELECT count(*) FROM readings WHERE session_id NOT IN (SELECT session_id FROM sessions)") == [
        (0,)
    ]
    print(
        f"\n{KILLS} kills -9: {LINES} lines, none lost, {sum(extra.values())} stored twice; "
        f"{board.resent} bytes sent again"
    )
