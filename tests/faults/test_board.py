"""The board unplugged and plugged back 10 times, and a board sending garbage for a while: the
producer waits for the port, records a gap per absence, rejects every bad line with a reason, and
every good line the board wrote is stored exactly once and judged once per algorithm."""

from __future__ import annotations

import random
import time

import pytest

from lib.ingest.protocol import REASONS
from tests.faults.board import DrivenBoard
from tests.faults.common import expected_detectors, lost_and_duplicated, report, wait_all_judged
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(900)]

UNPLUGS = 10


def _write_ledger(board: DrivenBoard, path) -> None:
    path.write_bytes(b"".join(board.ledger))


def _garbage(rng: random.Random, seconds: float, board: DrivenBoard) -> int:
    """Random bytes (no "!": garbage must not pass for a reading), some lines far too long;
    returns the number of newline-ended chunks sent."""
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        n = rng.choice([5, 40, 200, 2000])
        chunk = bytes(rng.randrange(256) for _ in range(n)).replace(b"!", b"?").replace(b"\n", b"")
        board.write(chunk + b"\n")
        sent += 1
        time.sleep(0.01)
    return sent


def test_unplug_replug_and_garbage(tmp_path):
    rng = random.Random(3)
    board = DrivenBoard(tmp_path / "board")
    board.plug()
    env = {"VIGIE_SERIAL_PORT": str(board.link)}
    recoveries = []
    with System(tmp_path, env) as system:
        board.wait_for_reader(timeout=120)
        k = 0
        for i in range(UNPLUGS):
            for _ in range(60):
                board.line("temperature" if k % 2 else "humidite", 20 + rng.gauss(0, 0.3) + (k % 2) * 30)
                k += 1
                time.sleep(0.004)
            if i == 3:
                # A line cut by the unplug: stored as a partial_line reject, not as a reading.
                board.write(b"humidite!4")
            board.drain()
            time.sleep(0.2)
            board.unplug()
            time.sleep(rng.uniform(0.2, 1.5))
            t0 = time.monotonic()
            board.plug()
            board.wait_for_reader(timeout=120)
            recoveries.append(time.monotonic() - t0)
        # Garbage for a while, then good lines again.
        chunks = _garbage(rng, 3.0, board)
        for _ in range(100):
            board.line("humidite", 50 + rng.gauss(0, 0.3))
        board.drain()
        ledger = tmp_path / "ledger.txt"
        _write_ledger(board, ledger)
        n = len(board.ledger)
        wait_all_judged(system, system.db, n)
        lost, dup, judged = lost_and_duplicated(system.db, ledger)
        rejects = system.ask("reject_reasons")
        gaps = len(system.ask("gap_list"))
        assert system.stop() == 0
    report(
        "board unplugged and replugged",
        UNPLUGS,
        lost,
        dup,
        recoveries,
        note=f"{n} good lines; {gaps} gaps recorded; recovery = replug to port reopened",
    )
    report(
        "board sending garbage for 3 s", 1, lost, dup, [], note=f"{chunks} garbage lines; rejects by reason {rejects}"
    )
    assert (lost, dup) == (0, 0)
    assert all(j == {"missing": 0, "extra": 0} for j in judged.values()), judged
    assert set(judged) == set(expected_detectors())
    assert set(rejects) <= set(REASONS)
    assert rejects.get("partial_line", 0) >= 1
    assert rejects.get("too_long", 0) >= 1
    # Every garbage chunk is a reject (blank ones aside), and nothing else became a reading.
    assert sum(rejects.values()) >= 0.9 * chunks
    assert gaps >= UNPLUGS - 1
