"""A full disk under the transport's log: the producer (its real worker process, on a real
pseudo-terminal) keeps reading the board, holds the lines in memory, says so once in its log and
in its status file, and stores every one of them once space is back.

Before: it exited on SQLite's "database or disk is full", its restarts failed faster than
supervisord's startsecs, it went FATAL, and a board does not re-send: every line of the outage
was lost.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from lib.config import PROJECT_ROOT
from lib.ingest.simulator import SignalModel, load_scenario, scenario_ticks
from lib.ingest.status import BUFFERING, read_statuses
from tests.faults.common import report
from tests.serial_rig import Rig, expected
from tests.system import fill, small_tmpfs, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

RATE = 100.0


@pytest.fixture
def small_data(tmp_path):
    """The data folder on a 16 MB tmpfs."""
    with small_tmpfs(tmp_path / "data", 16) as mnt:
        yield mnt


def test_full_disk_under_the_transport_producer_holds_lines_and_loses_none(tmp_path, small_data):
    ledger = tmp_path / "ledger"
    log_path = tmp_path / "producer.log"
    with Rig(tmp_path) as rig:
        board = rig.board()
        ticks = scenario_ticks(SignalModel(load_scenario(PROJECT_ROOT / "data/scenarios/demo.toml"), seed=4), rate=RATE)
        rig.play(board, ticks, ledger, count=int(RATE * 30))
        with open(log_path, "wb") as out:
            proc = rig.producer_process(board.link, output=out)
            wait_for(
                lambda: ledger.exists() and len(ledger.read_bytes().splitlines()) > RATE * 2,
                60,
                0.2,
                what="the board writing",
            )
            ballast = fill(small_data)
            t_full = time.monotonic()
            wait_for(
                lambda: "disk full: cannot write to the transport" in log_path.read_text(errors="replace"),
                60,
                0.2,
                what="the producer reporting the full disk",
            )
            reported_s = time.monotonic() - t_full
            statuses = wait_for(
                lambda: [s for s in read_statuses(small_data / "run") if s.state == BUFFERING],
                30,
                0.2,
                what="the status saying buffering",
            )
            time.sleep(8)  # the board writes on, the disk stays full
            assert proc.poll() is None, "the producer exited on a full disk"
            held_at_end = len(ledger.read_bytes().splitlines())
            ballast.unlink()
            t_back = time.monotonic()
            wait_for(
                lambda: "the transport writes again" in log_path.read_text(errors="replace"),
                60,
                0.2,
                what="the producer writing again",
            )
            recovery_s = time.monotonic() - t_back
            wait_for(lambda: len(ledger.read_bytes().splitlines()) >= RATE * 30, 120, 0.5, what="the board done")
            time.sleep(1.0)
            proc.terminate()
            assert proc.wait(30) == 0
        rig.stop_all()
        rig.store()
        good, _ = expected(ledger)
        stored = rig.query("SELECT sensor, value, count(*) FROM readings GROUP BY ALL")
    found = Counter({(s, v): n for s, v, n in stored})
    lost, dup = sum((good - found).values()), sum((found - good).values())
    text = log_path.read_text(errors="replace")
    report(
        "full disk under the transport log (producer, 16 MB tmpfs filled ~8 s)",
        1,
        lost,
        dup,
        [recovery_s],
        note=f"reported {reported_s:.1f}s after filling; {held_at_end} lines written by then; the producer "
        "never exited; recovery = space back to the held lines flushed",
    )
    assert text.count("cannot write to the transport") == 1, "said once, not per line"
    assert statuses[0].buffered_lines > 0
    assert (lost, dup) == (0, 0)
