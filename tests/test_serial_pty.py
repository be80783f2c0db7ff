"""Serial ingestion on a real pseudo-terminal, checked in the real store (a DuckDB file): good and
malformed lines, unplugs mid-stream, two boards at once."""

from __future__ import annotations

import time
from collections import Counter

from lib.config import PROJECT_ROOT
from lib.ingest import protocol
from lib.ingest.simulator import SignalModel, Unplug, load_scenario, scenario_from_dict, scenario_ticks
from tests.serial_rig import Rig, expected
from tests.system import wait_for

DEMO = PROJECT_ROOT / "data/scenarios/demo.toml"


def stored_readings(rig: Rig, session: str | None = None) -> Counter:
    where, params = ("WHERE session_id = ?", (session,)) if session else ("", ())
    return Counter(
        {
            (s, v): n
            for s, v, n in rig.query(f"SELECT sensor, value, count(*) FROM readings {where} GROUP BY ALL", params)
        }
    )


def test_n_good_and_m_malformed_lines_give_n_readings_and_m_rejects_with_their_reasons(tmp_path):
    rig = Rig(tmp_path)
    board = rig.board()
    ledger = tmp_path / "ledger"
    # Malformed lines of every form among the good ones, played fast.
    scenario = scenario_from_dict(
        {
            "sensors": {"humidite": {}, "temperature": {"base": 21.0}},
            "quiet_s": 0,
            "anomalies": [{"kind": "malformed", "sensor": "*", "every_s": 0.02}],
        }
    )
    ticks = scenario_ticks(SignalModel(scenario, seed=3), rate=1500)
    rig.play(board, ticks, ledger, count=3000)
    producer = rig.producer_thread(board.link)
    wait_for(lambda: producer.counts["readings"] + producer.counts["rejects"] >= 3000, 60, 0.1, what="3000 lines")
    rig.stop_all()
    rig.store()

    good, bad = expected(ledger)
    assert sum(good.values()) + sum(bad.values()) == 3000
    assert sum(bad.values()) >= 50 and len(bad) == 8, f"not every form of malformed line: {bad}"
    assert stored_readings(rig) == good
    assert Counter(dict(rig.query("SELECT reason, count(*) FROM rejects GROUP BY 1"))) == bad
    # Nothing else: one session, ended, no gap; sequence numbers 1..3000 shared by good and bad lines.
    ((session, ended),) = rig.query("SELECT session_id, ended_at IS NOT NULL FROM sessions")
    assert ended
    assert rig.query("SELECT count(*) FROM gaps") == [(0,)]
    seqs = rig.query("SELECT seq FROM readings UNION ALL SELECT seq FROM rejects ORDER BY 1")
    assert [s for (s,) in seqs] == list(range(1, 3001))
    raws = [r for (r,) in rig.query("SELECT raw FROM rejects")]
    assert all(r.isascii() and r.isprintable() for r in raws)
    assert any("\\xff" in r for r in raws), "bad UTF-8 kept, escaped"


def test_two_unplugs_mid_stream_two_gaps_every_connected_line_stored_once(tmp_path):
    rig = Rig(tmp_path)
    board = rig.board()
    ledger = tmp_path / "ledger"
    plugged_back = []
    plug = board.plug
    board.plug = lambda: (plugged_back.append(time.time()), plug())[1]
    ticks = scenario_ticks(SignalModel(load_scenario(DEMO), seed=5), rate=400)
    # The second unplug cuts a line in half, as a cable pulled mid-line does.
    rig.play(board, ticks, ledger, count=1500, unplugs={500: Unplug(1.0), 1000: Unplug(1.5, partial=True)})
    producer = rig.producer_thread(board.link)
    wait_for(lambda: producer.counts["readings"] >= 1500, 60, 0.1, what="1500 readings")
    rig.stop_all()
    rig.store()

    good, bad = expected(ledger)
    assert sum(good.values()) == 1500 and not bad
    assert stored_readings(rig) == good, "a line written while connected was lost or stored twice"
    assert rig.query("SELECT reason, raw FROM rejects") == [(protocol.PARTIAL_LINE, "half_a_li")]
    assert len(rig.query("SELECT session_id FROM sessions")) == 1, "the producer kept its session"
    gaps = rig.query("SELECT epoch(started_at), epoch(ended_at) FROM gaps ORDER BY 1")
    assert len(gaps) == 2 and all(end is not None for _, end in gaps)
    for (_, end), back in zip(gaps, plugged_back):
        # Reading again within 2 s of the board's return (backoff tops out at 2 s).
        assert end - back < 2.5, f"resumed {end - back:.1f}s after the board came back"


def test_two_boards_two_producers_one_store_sessions_tell_them_apart(tmp_path):
    rig = Rig(tmp_path)
    boards = [rig.board("arduino-a"), rig.board("arduino-b")]
    ledgers = [tmp_path / "ledger-a", tmp_path / "ledger-b"]
    producers = []
    for i, (board, ledger) in enumerate(zip(boards, ledgers)):
        rig.play(
            board, scenario_ticks(SignalModel(load_scenario(DEMO), seed=10 + i), rate=300), ledger, count=600 + 100 * i
        )
        producers.append(rig.producer_thread(board.link))
    wait_for(lambda: [p.counts["readings"] for p in producers] == [600, 700], 60, 0.1, what="both boards' lines")
    rig.stop_all()
    rig.store()

    sessions = dict(rig.query("SELECT session_id, port FROM sessions"))
    assert sorted(sessions.values()) == sorted(str(b.link) for b in boards)
    for producer, board, ledger in zip(producers, boards, ledgers):
        assert sessions[producer.session] == str(board.link)
        assert stored_readings(rig, producer.session) == expected(ledger)[0]
