"""The Live view's refresh: a few queries for all charted sensors, the same answers as
one sensor at a time, the charted sensors capped when none is chosen, and the warm-up progress
from the small tables."""

from datetime import datetime, timedelta

import pandas as pd

from lib.messages import SessionStart
from lib.page import queries
from lib.store.batch import Batch
from lib.store.reader import read_db
from lib.store.schema import init_db
from lib.store.writer import write_batch

T0 = datetime(2026, 11, 28, 12, 0, 0)


def _us(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1)).total_seconds() * 1e6)


def _db(tmp_path, judged: dict[str, int], warmup: int = 20):
    """Sensors with `judged[sensor]` readings judged by dbscan (the first `warmup` initializing,
    every 7th later one an anomaly) in one session."""
    db = tmp_path / "v.duckdb"
    init_db(db)
    b = Batch()
    b.sessions.append(SessionStart(session="s1", port="sim", baud=9600, host="h", ts_us=_us(T0)))
    seq = 0
    for k in range(max(judged.values())):
        for sensor, n in judged.items():
            seq += 1
            ts = _us(T0 + timedelta(milliseconds=10 * seq))
            b.readings[("s1", seq)] = (sensor, ts, float(k % 13) + (40.0 if k % 7 == 6 else 0.0))
            if k < n:
                state = "initializing" if k < warmup else ("anomaly" if k % 7 == 6 else "normal")
                b.states[("s1", seq, "dbscan")] = (sensor, ts, state, None if k < warmup else 0.9)
    write_batch(db, b)
    return db


def test_charts_of_many_sensors_equal_each_sensor_alone(tmp_path):
    db = _db(tmp_path, {"a": 300, "b": 250, "c": 40})
    start, end = T0, T0 + timedelta(minutes=5)
    with read_db(db) as conn:
        together = queries.charts_data(conn, ("a", "b", "c"), start, end, buckets=50)
        alone = {s: queries.chart_data(conn, s, start, end, buckets=50) for s in ("a", "b", "c")}
    assert set(together) == {"a", "b", "c"}
    for sensor, (line, marks) in alone.items():
        assert len(marks) > 0 and len(line) < 300  # thinned, with flags
        pd.testing.assert_frame_equal(together[sensor][0], line)
        pd.testing.assert_frame_equal(together[sensor][1], marks)


def test_live_refresh_charts_a_few_sensors_and_tells_how_many_there_are(tmp_path):
    db = _db(tmp_path, {"a": 300, "b": 250, "c": 12})
    now = T0 + timedelta(minutes=1)
    with read_db(db) as conn:
        snap = queries.live_snapshot(conn, (), T0, now, max_charts=2)
        chosen = queries.live_snapshot(conn, ("c",), T0, now, max_charts=2)
    assert list(snap["sensors"]) == ["a", "b"] and snap["charted_of"] == 3
    assert list(chosen["sensors"]) == ["c"] and chosen["charted_of"] == 1
    # c is still filling its window: 12 of 20 judged; a and b are past it
    progress = chosen["sensors"]["c"]["progress"]
    assert progress[["detector", "seen", "initializing"]].values.tolist() == [["dbscan", 12, True]]
    assert not snap["sensors"]["a"]["progress"]["initializing"].any()
    assert len(snap["sensors"]["a"]["marks"]) == len([k for k in range(20, 300) if k % 7 == 6])
