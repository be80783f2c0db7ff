"""Where a chart's line breaks (lib/page/runs.py): at a new session, at a recorded gap, at a
silence; never between the points of a steady line, thinned or not."""

from datetime import datetime, timedelta

import pandas as pd

from lib.page.runs import split_runs

T0 = datetime(2026, 11, 30, 13, 0)


def line(seconds, sessions=None):
    return pd.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s in seconds],
            "value": [float(s) for s in seconds],
            "session_id": sessions or ["s1"] * len(seconds),
        }
    )


def test_a_steady_line_is_one_run():
    runs, breaks = split_runs(line(range(0, 300, 1)))
    assert set(runs["run"]) == {0} and breaks.empty
    # thinned to 2 points per 60 s bucket: points up to two buckets apart are not a silence
    thinned = [b * 60 + o for b in range(0, 10, 2) for o in (1, 58)]
    runs, breaks = split_runs(line(thinned), bucket_s=60.0)
    assert set(runs["run"]) == {0} and breaks.empty


def test_a_silence_a_recorded_gap_and_a_new_session_each_start_a_run():
    seconds = [*range(0, 50), *range(80, 100), *range(104, 150), *range(150, 170)]
    sessions = ["s1"] * 116 + ["s2"] * 20
    gaps = pd.DataFrame(
        {
            "session_id": ["s1", "other"],
            "started_at": [T0 + timedelta(seconds=100.5)] * 2,
            "ended_at": [T0 + timedelta(seconds=103.5)] * 2,
            "reason": ["unplugged", "port lost"],
        }
    )
    runs, breaks = split_runs(line(seconds, sessions), gaps)
    assert list(runs.groupby("run")["ts"].min().dt.second) == [0, 20, 44, 30]  # 13:00:00, :01:20, :01:44, :02:30
    assert list(breaks["what"]) == ["silent", "gap: unplugged", "new session s2"]
    assert list(breaks["seconds"]) == [31.0, 5.0, 1.0]
    assert list(breaks["start"]) == [T0 + timedelta(seconds=s) for s in (49, 99, 149)]


def test_a_slow_sensor_is_silent_only_after_five_of_its_intervals():
    runs, breaks = split_runs(line([0, 60, 120, 180, 240, 300, 600, 1000]))  # 300 s: five intervals; 400 s
    assert list(runs["run"]) == [0, 0, 0, 0, 0, 0, 0, 1] and list(breaks["what"]) == ["silent"]
