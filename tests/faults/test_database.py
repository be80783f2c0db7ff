"""Faults around the DuckDB file: an outside process reading it for several seconds, a full disk,
and (see test_foreign_file.py) a file that is not ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from lib.config import PROJECT_ROOT
from lib.ingest.protocol import Parsed, parse_line
from lib.store.schema import open_checked
from tests.faults.common import assert_exactly_once, ledger_lines, lost_and_duplicated, report, sim_env, wait_all_judged
from tests.system import System, fill, small_tmpfs, stored, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(900)]

RATE = 100.0

READER = """
import sys, time
from pathlib import Path
from lib.page import queries
from lib.store.reader import read_db
path, seconds = Path(sys.argv[1]), float(sys.argv[2])
print("reading", flush=True)
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    with read_db(path) as conn:   # through the store: it holds the file
        queries.sensors(conn)
        queries.per_detector(conn, queries.Filters())
    n += 1
print(f"done {n}", flush=True)
"""


def test_outside_readers_do_not_stop_the_writer(tmp_path):
    """The store holds the DuckDB file for its whole run and answers reads on its socket
    (lib.store.readserver): a process reading in a tight loop for seconds does not pause ingestion (it
    used to: readers and the writer took turns at the file), and nothing is lost or doubled."""
    ledger = tmp_path / "ledger.txt"
    rounds, read_s, grew, reads = 3, 6.0, [], []
    with System(tmp_path, sim_env(ledger, RATE, int(RATE * 600))) as system:
        wait_for(lambda: stored(system.db, "states") > 100, 180, interval=0.5, what="data flowing")
        for _ in range(rounds):
            reader = subprocess.Popen(
                [sys.executable, "-c", READER, str(system.db), str(read_s)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=PROJECT_ROOT,
            )
            try:
                assert reader.stdout.readline().strip() == "reading"
                before = stored(system.db)
                time.sleep(read_s / 2)
                grew.append(stored(system.db) - before)
                done = reader.stdout.readline().strip()
                assert done.startswith("done ") and int(done.split()[1]) > 0, done
                reads.append(int(done.split()[1]))
                assert reader.wait(timeout=30) == 0
            finally:
                if reader.poll() is None:
                    reader.kill()
                    reader.wait()
        # DuckDB itself lets no other process open the file meanwhile: readers must come through the store
        with pytest.raises(duckdb.Error, match="(?i)lock"):
            duckdb.connect(str(system.db), read_only=True)
        system.ctl("stop", "simulator")
        n = ledger_lines(ledger)
        wait_all_judged(system, system.db, n)
        lost, dup, _ = lost_and_duplicated(system.db, ledger)
        report(
            "an outside process reading the database in a loop for 6 s",
            rounds,
            lost,
            dup,
            [],
            note=f"readings stored in 3 s of each reading round: {grew}; reads per round: {reads}",
        )
        # ~RATE readings/s keep arriving: 3 s of reading must not have stopped the writer
        assert all(g >= RATE for g in grew), grew
        assert_exactly_once(system.db, ledger)
        assert system.stop() == 0


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "small", 24) as mnt:
        yield mnt


def test_full_disk_store_reports_keeps_and_resumes(tmp_path, small_disk):
    ledger = tmp_path / "ledger.txt"
    db = small_disk / "vigie.duckdb"
    env = {**sim_env(ledger, RATE, int(RATE * 600)), "VIGIE_PATHS_DATABASE": str(db)}
    with System(tmp_path, env) as system:
        wait_for(lambda: stored(db, "states") > 100, 180, interval=0.5, what="data flowing")
        ballast = fill(small_disk, 256 * 1024)
        t_full = time.monotonic()
        wait_for(lambda: "disk full" in system.log(), 120, interval=0.5, what="the store reporting the full disk")
        reported_s = time.monotonic() - t_full
        kept = stored(db)
        time.sleep(8)  # full for a while, the board still writing
        assert stored(db) >= kept  # what it had is still there
        ballast.unlink()  # space returns
        t0 = time.monotonic()
        target = ledger_lines(ledger)
        wait_for(lambda: stored(db) >= target, 180, interval=0.5, what="the store catching up after space returned")
        recovery = time.monotonic() - t0
        system.ctl("stop", "simulator")
        n = ledger_lines(ledger)
        wait_all_judged(system, db, n)
        lost, dup, _ = lost_and_duplicated(db, ledger)
        store_log = [line for line in system.log().splitlines() if "disk full" in line or "writing again" in line]
        assert system.stop() == 0
    report(
        "full disk under the DuckDB file (tmpfs, ~10 s)",
        1,
        lost,
        dup,
        [recovery],
        note=f"reported {reported_s:.1f}s after filling; recovery = space back to caught up",
    )
    assert store_log and "No space left on device" in store_log[0], store_log
    assert any("writing again" in line for line in store_log)
    assert_exactly_once(db, ledger)
    open_checked(db)  # reads every block of every table: no damage


def _ledger_from(ledger: Path, start: int) -> Counter:
    out = Counter()
    for raw in ledger.read_bytes().splitlines()[start:]:
        p = parse_line(raw)
        if isinstance(p, Parsed):
            out[(p.sensor, round(p.value, 2))] += 1
    return out


def test_database_deleted_while_running_goes_on_in_a_new_file(tmp_path):
    """`rm data/vigie.duckdb*` during a run: the store says so at its next write and goes on in a
    new file at the path, which the page reads (the socket is served again): every line the
    board writes from then on is stored once. Before, the store went on writing into the deleted
    file without a word, and the page said "No data yet"."""
    ledger = tmp_path / "ledger.txt"
    with System(tmp_path, sim_env(ledger, RATE, int(RATE * 600))) as system:
        wait_for(lambda: stored(system.db, "states") > 100, 180, interval=0.5, what="data flowing")
        from_line = ledger_lines(ledger)
        for p in system.data.glob("vigie.duckdb*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        t0 = time.monotonic()
        wait_for(lambda: "WAS DELETED" in system.log(), 60, interval=0.2, what="the store reporting the deletion")
        reported_s = time.monotonic() - t0
        wait_for(lambda: stored(system.db) > 0, 60, interval=0.2, what="readings in the new file")
        recovery_s = time.monotonic() - t0
        time.sleep(3)
        system.ctl("stop", "simulator")
        after = _ledger_from(ledger, from_line)

        def missing():
            found = Counter({(s, round(v, 2)): n for s, v, n in system.ask("value_counts")})
            return sum((after - found).values())

        wait_for(lambda: missing() == 0 or None, 120, interval=1, what="every line since the deletion stored")
        lost, dup = missing(), system.ask("repeated_readings")
        assert system.stop() == 0
    report(
        "database files deleted while running (`rm data/vigie.duckdb*`)",
        1,
        lost,
        dup,
        [recovery_s],
        note=f"reported {reported_s:.1f}s after the rm; lost/duplicated count the {sum(after.values())} lines "
        "written after the rm (what the file held before is gone with it); recovery = rm to readings "
        "in the new file, read through the socket",
    )
    assert (lost, dup) == (0, 0)
