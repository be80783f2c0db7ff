"""The walking skeleton, end to end: supervisord, the simulated board on a real pseudo-terminal,
the producer, the detector worker, the store and the app, checked by querying the DuckDB file."""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter

import pytest

from lib.config import load_config
from lib.detect import detectors
from lib.detect.rules import rules_for
from lib.ingest.protocol import parse_line
from lib.page import health
from tests.system import System, wait_for

pytestmark = pytest.mark.e2e

N_LINES = 2000
RATE = 100.0
# the default set (vigie.toml) and the rules that give every reading a row
_DEFAULT = load_config(env={})
JUDGES = list(_DEFAULT.detection.detectors) + rules_for(_DEFAULT, "*").active


def test_every_line_stored_once_judged_by_both_and_spikes_flagged(tmp_path):
    ledger = tmp_path / "ledger.txt"
    env = {
        "VIGIE_SIMULATOR_SCENARIO": "data/scenarios/spikes.toml",
        "VIGIE_SIMULATOR_RATE": str(RATE),
        "VIGIE_SIMULATOR_COUNT": str(N_LINES),
        "VIGIE_SIMULATOR_LEDGER": str(ledger),
    }
    with System(tmp_path, env) as system:
        t0 = time.monotonic()
        # Readings and both algorithms' states for every line, as the app would read them.
        wait_for(
            lambda: system.count("states") >= len(JUDGES) * N_LINES, timeout=240, what=f"{len(JUDGES) * N_LINES} states"
        )
        elapsed = time.monotonic() - t0
        page = urllib.request.urlopen(f"http://127.0.0.1:{system.app_port}/", timeout=10).read()
        assert b"<title>" in page.lower() or b"streamlit" in page.lower()
        # the page's health panel on the running system: every program up, the board connected, the
        # store's last write recent, nothing behind on the transport
        config = load_config(env={"VIGIE_PATHS_DATA_DIR": str(system.data)})

        def every_line_counted():  # a producer's status counts lines at most once a second
            found = health.check(config)
            return found if [b.lines_read for b in found.boards] == [N_LINES] else None

        running = wait_for(every_line_counted, timeout=15, what="the producer's status to count every line")
        assert {p.name: p.state for p in running.programs if p.name in ("store", "detector", "producer")} == {
            "store": "RUNNING",
            "detector": "RUNNING",
            "producer": "RUNNING",
        }, running
        assert [(b.name, b.state) for b in running.boards] == [("arduino", "connected")]
        assert running.now - running.store_last_write < 60 and running.problems == [], running
        rc = system.stop()
    assert rc == 0, system.log()[-3000:]
    print(
        f"\n{N_LINES} lines at {RATE:.0f} lines/s stored and judged in {elapsed:.1f}s "
        f"({N_LINES / elapsed:.0f} readings/s end to end, including start-up)"
    )

    written = Counter()
    for raw in ledger.read_bytes().splitlines():
        p = parse_line(raw)
        written[(p.sensor, round(p.value, 2))] += 1
    assert sum(written.values()) == N_LINES

    stored = Counter(
        {(s, round(v, 2)): n for s, v, n in system.query("SELECT sensor, value, count(*) FROM readings GROUP BY ALL")}
    )
    assert stored == written, "stored readings differ from the lines the board wrote"

    per_detector = dict(system.query("SELECT detector, count(*) FROM states GROUP BY 1"))
    # the board stops after N_LINES: each sensor's silence after its last line is one no-data row
    assert per_detector.pop("rule:no_data", 0) <= 2
    assert per_detector == {name: N_LINES for name in JUDGES}
    unjudged = system.query(f"""
        SELECT count(*) FROM readings r WHERE
          (SELECT count(DISTINCT detector) FROM states s WHERE s.session_id = r.session_id AND s.seq = r.seq
             AND detector <> 'rule:no_data') <> {len(JUDGES)}""")
    assert unjudged == [(0,)]

    # Each sensor starts with exactly its detector's warm-up of initializing readings: the window
    # of 20, then 200 of its own scores for the calibration.
    warmup = detectors.build("dbscan", {"window": 20})[0].warmup
    init = dict(
        system.query(
            "SELECT sensor, count(*) FROM states WHERE detector = 'dbscan' AND state = 'initializing' GROUP BY 1"
        )
    )
    assert init == {"humidite": warmup, "temperature": warmup}

    judged_from = """(SELECT min(s.ts) FROM states s WHERE s.sensor = t.sensor AND s.detector = 'dbscan'
                         AND s.state <> 'initializing')"""
    spikes = system.query(f"SELECT sensor, started_at FROM truth t WHERE kind = 'spike' AND started_at > {judged_from}")
    assert len(spikes) >= 5
    missed = system.query(f"""
        SELECT t.sensor, t.started_at FROM truth t WHERE t.kind = 'spike' AND t.started_at > {judged_from} AND NOT
        EXISTS (
          SELECT 1 FROM states s WHERE s.sensor = t.sensor AND s.detector = 'dbscan' AND s.state = 'anomaly'
            AND s.ts BETWEEN t.started_at - INTERVAL 2 SECOND AND t.ended_at + INTERVAL 2 SECOND)""")
    assert missed == [], f"spikes DBSCAN did not flag: {missed}"

    sessions = system.query("SELECT port, baud, ended_at IS NOT NULL FROM sessions")
    assert len(sessions) == 1 and sessions[0][1] == 9600 and sessions[0][2]


def _page_answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
    except OSError:
        return False  # not listening yet: the page starts last


def test_a_normal_start_and_stop_logs_no_warning(tmp_path):
    """`make run`'s system as configured, started, read from and stopped with Ctrl-C: no line of
    the terminal or of the log files is a warning, an error or critical (a warning is for the
    operator to act on)."""
    with System(tmp_path) as system:
        wait_for(lambda: system.count("states") > 0, 120, what="a state stored")
        wait_for(lambda: _page_answers(system.app_port), 60, what="the page answering")
        rc = system.stop()
    assert rc == 0, system.log()[-3000:]
    logs = {
        "terminal": system.log(),
        **{
            str(p.relative_to(system.data)): p.read_text(errors="replace")
            for p in [system.data / "supervisord.log", *(system.data / "logs").glob("*")]
            if p.is_file()
        },
    }
    assert "supervisord started" in logs["supervisord.log"] and "stopped: store (exit status 0)" in logs["terminal"]
    bad = [
        f"{name}: {line}"
        for name, text in logs.items()
        for line in text.splitlines()
        if re.search(r"\b(WARN|WARNING|ERROR|CRIT|CRITICAL)\b", line)
    ]
    assert not bad, "\n".join(bad)
