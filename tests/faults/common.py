"""What the fault tests share: the simulator's ledger as the truth of what was written, checks
of "stored exactly once, judged exactly once per algorithm", and the figures for the README."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

from lib.config import load_config
from lib.ingest.protocol import Parsed, parse_line
from tests.system import System, ask, stored

# Where the figures go besides stdout (`pytest -s tests/faults | grep FAULT` prints them too).
REPORT = Path(os.environ.get("FAULT_REPORT", "/tmp/vigie-fault-report.jsonl"))


def sim_env(ledger: Path, rate: float, count: int, scenario: str = "data/scenarios/spikes.toml") -> dict:
    return {
        "VIGIE_SIMULATOR_SCENARIO": scenario,
        "VIGIE_SIMULATOR_RATE": str(rate),
        "VIGIE_SIMULATOR_COUNT": str(count),
        "VIGIE_SIMULATOR_LEDGER": str(ledger),
    }


def written(ledger: Path) -> Counter:
    """(sensor, value) -> times the board wrote it, from the ledger (good lines only)."""
    out = Counter()
    if ledger.exists():
        for raw in ledger.read_bytes().splitlines():
            p = parse_line(raw)
            if isinstance(p, Parsed):
                out[(p.sensor, round(p.value, 2))] += 1
    return out


def ledger_lines(ledger: Path) -> int:
    return ledger.read_bytes().count(b"\n") if ledger.exists() else 0


def status(system: System) -> dict[str, tuple[str, int]]:
    """program -> (state, pid) from `supervisorctl status`."""
    out = {}
    for line in system.ctl("status").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else 0
            out[parts[0]] = (parts[1], pid)
    return out


def running_pid(system: System, program: str) -> int:
    state, pid = status(system).get(program, ("", 0))
    return pid if state == "RUNNING" else 0


def expected_detectors() -> tuple[str, ...]:
    return load_config().detection.detectors


def wait_all_judged(system: System, db: Path, n: int, timeout: float = 300, stall_s: float = 30) -> None:
    """Wait until `n` readings and their states are stored, or until nothing has moved for
    `stall_s` seconds (something was lost: the caller's checks then say what)."""
    dets = expected_detectors()
    last, last_change, deadline = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = (stored(db, "readings"), stored(db, "states"))
        if now[0] >= n and now[1] >= n * len(dets):
            break
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        time.sleep(1.0)
    # A short settle: anything more (a duplicate) would arrive within a few flushes.
    time.sleep(2)


def lost_and_duplicated(db: Path, ledger: Path) -> tuple[int, int, dict]:
    """Readings the board wrote but the store lacks, and readings stored more than once; plus
    per-detector judgement counts (missing, extra)."""
    truth = written(ledger)
    found = Counter({(s, round(v, 2)): n for s, v, n in ask(db, "value_counts") or []})
    lost = sum((truth - found).values())
    dup = sum((found - truth).values())
    n = stored(db, "readings")
    counts = ask(db, "judged_counts") or {}
    judged = {}
    for det in expected_detectors():
        total, distinct = counts.get(det, (0, 0))
        judged[det] = {"missing": n - distinct, "extra": total - distinct}
    return lost, dup, judged


def assert_exactly_once(db: Path, ledger: Path) -> tuple[int, int]:
    lost, dup, judged = lost_and_duplicated(db, ledger)
    assert (lost, dup) == (0, 0), f"{lost} readings lost, {dup} duplicated"
    bad = {d: j for d, j in judged.items() if j != {"missing": 0, "extra": 0}}
    assert not bad, f"readings not judged exactly once: {bad}"
    assert ask(db, "repeated_readings") == 0
    return lost, dup


def report(fault: str, times: int, lost: int, dup: int, recoveries: list[float], note: str = "") -> None:
    rec = f"median {statistics.median(recoveries):.1f} s, max {max(recoveries):.1f} s" if recoveries else "-"
    line = f"FAULT | {fault} | {times} | {lost} | {dup} | {rec} | {note}"
    print("\n" + line, flush=True)
    with open(REPORT, "a") as f:
        f.write(
            json.dumps(
                {
                    "fault": fault,
                    "times": times,
                    "lost": lost,
                    "duplicated": dup,
                    "recovery_s": recoveries,
                    "note": note,
                    "at": time.time(),
                }
            )
            + "\n"
        )
