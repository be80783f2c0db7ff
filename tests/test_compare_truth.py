"""Compare's "against the truth": injections matched to readings by session and sequence, not by
time. A board's lines read together share one receive time, so time alone cannot tell which
reading of a batch an injection changed."""

from datetime import datetime, timedelta

import duckdb
import pytest

from lib.detect.compare import precision_recall_f1
from lib.page import queries
from lib.page.queries import Filters
from lib.store.schema import apply_migrations

T0 = datetime(2026, 1, 1)
SPIKE_RANK = 12  # temp's 12th reading: it shares its receive time with the 11th


def _ts(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def db(tmp_path):
    """One session, two sensors. temp: 60 readings, two to a receive time (ranks 1-2 at 0.0 s,
    3-4 at 0.2 s, ...); hum: one reading each 0.2 s, silent from 2.0 s to 3.0 s. seq interleaves them."""
    conn = duckdb.connect(str(tmp_path / "v.duckdb"))
    apply_migrations(conn)
    readings = [("temp", k, ((k - 1) // 2) * 0.2) for k in range(1, 61)]
    hum_times = [round(j * 0.2, 1) for j in range(30) if not 2.0 < j * 0.2 < 3.0]
    readings += [("hum", j + 1, t) for j, t in enumerate(hum_times)]
    readings.sort(key=lambda r: (r[2], r[0] == "hum", r[1]))
    seq = {}
    for i, (sensor, rank, t) in enumerate(readings, start=1):
        seq[(sensor, rank)] = i
        conn.execute("INSERT INTO readings VALUES ('s1', ?, ?, ?, 1.0)", [i, sensor, _ts(t)])
    flags = {("temp", SPIKE_RANK), ("temp", 40), ("temp", 44), ("temp", 55), ("hum", 5)}
    for (sensor, rank), i in seq.items():
        t = readings[i - 1][2]
        state = "anomaly" if (sensor, rank) in flags else "normal"
        conn.execute(
            "INSERT INTO states VALUES ('s1', ?, ?, ?, 'dbscan', ?, ?)",
            [i, sensor, _ts(t), state, 1.0 if state == "anomaly" else 0.0],
        )
    # the no-data rule's row sits on hum's last reading before its silence (rank 11, at 2.0 s)
    conn.execute(
        "INSERT INTO states VALUES ('s1', ?, 'hum', ?, 'rule:no_data', 'anomaly', 1.0)", [seq[("hum", 11)], _ts(2.0)]
    )
    truth = [
        ("spike", "temp", 0.9, 0.9),  # written just before the 1.0 s batch (ranks 11, 12) was read
        ("level_shift", "temp", 3.05, 4.0),  # ranks 33 (3.2 s) .. 42 (4.0 s)
        ("dropout", "hum", 2.1, 2.9),
        ("malformed", "temp", 5.0, 5.0),
    ]  # a reject: nothing to match
    for kind, sensor, a, b in truth:
        conn.execute("INSERT INTO truth VALUES ('run', ?, ?, ?, ?)", [sensor, kind, _ts(a), _ts(b)])
    for rank, verdict in ((50, "missed"), (44, "rejected")):
        conn.execute(
            "INSERT INTO labels VALUES ('s1', ?, 'temp', ?, ?, NULL, NULL, ?)",
            [seq[("temp", rank)], _ts(((rank - 1) // 2) * 0.2), verdict, T0],
        )
    conn.close()
    return duckdb.connect(str(tmp_path / "v.duckdb"), read_only=True)


def test_compare_counts_a_session_with_shared_timestamps_by_hand(db):
    got = precision_recall_f1(queries.scores_vs_truth(db, Filters())).set_index("detector")
    # anomalies: the spike (temp ranks 11..15: the batch it arrived in, then the tolerance of 3),
    # the level shift (33..45), the dropout (hum 11..14), the reading labelled missed (temp 50)
    # dbscan: caught the spike (12) and the level shift (40); flagged 12, 40 (yes), 44 (rejected by
    # the operator), 55 and hum 5 (no)
    d = got.loc["dbscan"]
    assert (d.anomalies, d.caught, d.tp, d.fp) == (4, 2, 2, 3)
    assert (d.precision, d.recall) == (pytest.approx(2 / 5), 0.5)
    n = got.loc["rule:no_data"]
    assert (n.anomalies, n.caught, n.tp, n.fp, n.precision, n.recall) == (4, 1, 1, 0, 1.0, 0.25)
    only_temp = precision_recall_f1(queries.scores_vs_truth(db, Filters(sensors=("temp",)))).set_index("detector")
    assert only_temp.loc["dbscan", "recall"] == pytest.approx(2 / 3)
    assert queries.truth_available(db, Filters()) == {"injections": 3, "labels": 2}


def test_the_spike_is_the_batch_it_arrived_in_not_one_reading_picked_by_time(db):
    tsql, params = queries.truth_sql(Filters())
    rows = db.execute(
        f"SELECT r.sensor, r.seq, t.item FROM ({tsql}) t JOIN readings r USING (session_id, seq) "
        "ORDER BY t.item, r.seq",
        params,
    ).fetchall()
    ranks = {}
    for sensor, seq, item in rows:
        ranks.setdefault(item, []).append((sensor, seq))
    temp_seq = [s for (s,) in db.execute("SELECT seq FROM readings WHERE sensor = 'temp' ORDER BY seq").fetchall()]
    spike = [temp_seq.index(seq) + 1 for sensor, seq in ranks[1]]
    assert spike == [11, 12, 13, 14, 15]
