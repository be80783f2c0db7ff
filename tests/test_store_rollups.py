"""The store's per-minute rollups and flagged readings (lib/store/rollups.py): kept by the writer
in the transaction of the rows they come from (a replay adds nothing, a state stored before its
reading gets the value later), built for files that lack them by the migration, and pruned with
the readings."""

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lib.store.batch import Batch
from lib.store.reader import read_db
from lib.store.retention import prune
from lib.store.schema import init_db, open_checked
from lib.store.writer import write_batch

FIXTURE = Path(__file__).parent / "fixtures" / "before-versions.duckdb"
T0 = datetime(2026, 11, 30, 13, 50, 30)

BY_HAND_1M = """
    SELECT sensor, session_id, time_bucket(INTERVAL 1 MINUTE, ts), count(*), min(value), arg_min(ts, value),
           max(value), arg_max(ts, value) FROM readings GROUP BY ALL ORDER BY ALL"""
BY_HAND_FLAGS = """
    SELECT s.sensor, s.session_id, s.seq, s.ts, s.detector, s.score, r.value FROM states s
    JOIN readings r USING (session_id, seq) WHERE s.state = 'anomaly' ORDER BY ALL"""


def us(t: datetime) -> int:
    return int(t.replace(tzinfo=timezone.utc).timestamp() * 1e6)


def readings(batch: Batch, seqs, session="s1", sensor="h"):
    for seq in seqs:
        batch.readings[(session, seq)] = (sensor, us(T0 + timedelta(seconds=seq)), float(seq % 7) * (-1) ** seq)


def states(batch: Batch, seqs, session="s1", sensor="h"):
    for seq in seqs:
        flagged = seq % 5 == 0
        batch.states[(session, seq, "dbscan")] = (
            sensor,
            us(T0 + timedelta(seconds=seq)),
            "anomaly" if flagged else "normal",
            0.9 if flagged else 0.1,
        )


def table(path, sql):
    with read_db(path) as conn:
        return conn.execute(sql).fetchall()


def test_the_writer_keeps_rollups_and_flags_equal_to_the_readings_and_states(tmp_path):
    path = tmp_path / "vigie.duckdb"
    init_db(path)
    first = Batch()
    readings(first, range(1, 100))  # 13:50:31 to 13:52:09: three minutes
    states(first, range(1, 60))
    write_batch(path, first)
    write_batch(path, first)  # a replay after a crash: dropped by the watermarks
    later = Batch()
    states(later, range(60, 130))  # flags of 100..129 come before their readings
    write_batch(path, later)
    last = Batch()
    readings(last, range(100, 130))
    readings(last, range(1, 20), session="s2", sensor="t")
    write_batch(path, last)

    assert table(path, "SELECT * FROM readings_1m ORDER BY ALL") == table(path, BY_HAND_1M)
    assert [r[3] for r in table(path, "SELECT * FROM readings_1m WHERE session_id = 's1' ORDER BY minute")] == [
        29,
        60,
        40,
    ]
    assert table(path, "SELECT * FROM flags ORDER BY ALL") == table(path, BY_HAND_FLAGS)
    assert len(table(path, "SELECT * FROM flags")) == 25 and not table(path, "SELECT * FROM flags WHERE value IS NULL")


def test_the_migration_builds_them_for_an_older_file_and_retention_prunes_them(tmp_path):
    path = tmp_path / "vigie.duckdb"
    shutil.copyfile(FIXTURE, path)
    open_checked(path)
    rollup = table(path, "SELECT * FROM readings_1m ORDER BY ALL")
    assert rollup and rollup == table(path, BY_HAND_1M)
    flags = table(path, "SELECT * FROM flags ORDER BY ALL")
    assert flags and flags == table(path, BY_HAND_FLAGS)

    middle = table(path, "SELECT min(ts) + (max(ts) - min(ts)) / 2 FROM readings")[0][0]
    assert middle.second or middle.microsecond  # the cut falls inside a minute
    prune(path, middle, None, "none")
    assert table(path, "SELECT * FROM readings_1m ORDER BY ALL") == table(path, BY_HAND_1M)
    assert table(path, "SELECT * FROM flags ORDER BY ALL") == table(path, BY_HAND_FLAGS)
    assert table(path, f"SELECT count(*) FROM flags WHERE ts < '{middle}'") == [(0,)]
    assert table(path, "SELECT count(*) FROM flags")[0][0] > 0


def test_a_long_span_chart_from_the_rollups_matches_the_readings(tmp_path):
    """Over 3 days (600 buckets of 7.2 min) the chart reads readings_1m and flags: its line holds
    the span's lowest and highest reading of every bucket, each a stored reading; each algorithm's
    strongest flag of each bucket is drawn at its own reading, no other."""
    from lib.page import queries
    from tests.appdata import prepare

    path = tmp_path / "vigie.duckdb"
    now = datetime(2026, 11, 30, 12, 0)
    prepare(path, now=now)
    start, end = now - timedelta(days=3, minutes=5), now
    with read_db(path) as conn:
        lines, marks = queries.charts_fetch(conn, ("humidite",), start, end)
        every = conn.execute("SELECT ts, value, session_id FROM readings WHERE sensor = 'humidite'").df()
        flagged = conn.execute("""SELECT s.ts, r.value, s.detector, s.score, s.session_id, s.seq FROM states s
            JOIN readings r USING (session_id, seq) WHERE s.sensor = 'humidite' AND s.state = 'anomaly'""").df()
    assert 0 < len(lines) <= 2 * 600 * 3  # (3 sessions: a bucket may hold two)
    stored = set(every[["ts", "value"]].itertuples(index=False, name=None))
    assert set(lines[["ts", "value"]].itertuples(index=False, name=None)) <= stored
    assert lines["value"].max() == every["value"].max() and lines["value"].min() == every["value"].min()
    span_us = (end - start).total_seconds() * 1e6
    bucket = lambda t: min(int((t - start).total_seconds() * 1e6 * 600 // span_us), 599)  # noqa: E731
    flagged["bucket"] = flagged["ts"].map(bucket)
    best = flagged.sort_values(["score", "ts"], ascending=[False, True]).groupby(["detector", "bucket"]).head(1)
    assert sorted(marks[["ts", "value", "detector", "seq"]].itertuples(index=False, name=None)) == sorted(
        best[["ts", "value", "detector", "seq"]].itertuples(index=False, name=None)
    )
    assert len(marks) < len(flagged)
