"""The evaluation on small slices: NAB files in and NAB results format out, window metrics,
the CLI, simulator-generated truth and a recorded session against the truth table."""

import csv
import json

import duckdb
import numpy as np
import pytest

from lib.detect.evaluation import Series, evaluate, load_nab, session_series, truth_windows, window_metrics
from workers import evaluate as evaluate_cli


@pytest.fixture
def nab_dir(tmp_path):
    """A tiny NAB-format corpus: a noisy series with one spike, its window, and a file with none."""
    root = tmp_path / "nab"
    rng = np.random.default_rng(0)
    files = {}
    for name, spike in (("cat/a.csv", 700), ("other/b.csv", None)):
        ts = [f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(1000)]
        vals = 10 + rng.normal(0, 0.5, 1000)
        if spike:
            vals[spike] += 12
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value"])
            w.writerows(zip(ts, np.round(vals, 3)))
        files[name] = [[ts[690] + ".000000", ts[720] + ".000000"]] if spike else []
    (root / "windows.json").write_text(json.dumps(files))
    return root


def test_replay_writes_nab_results_and_scores(nab_dir, tmp_path):
    series = load_nab(nab_dir, nab_dir / "windows.json")
    assert [s.name for s in series] == ["cat/a.csv", "other/b.csv"]
    assert series[0].windows == [(690, 720)]
    out = tmp_path / "out"
    r = evaluate(series, "zscore", out_dir=out)
    rows = list(csv.DictReader((out / "cat" / "zscore_a.csv").open()))
    assert len(rows) == 1000 and list(rows[0]) == ["timestamp", "value", "anomaly_score", "label"]
    assert rows[0]["timestamp"] == series[0].timestamps[0]
    assert sum(int(x["label"]) for x in rows) == 31
    assert (out / "other" / "zscore_b.csv").exists()
    assert r["overall"]["recall"] == 1.0 and r["nab_score"] > 50


def test_window_metrics_count_windows_and_false_rows():
    s = Series("x", list(range(100)), np.zeros(100), [(40, 49), (80, 89)])
    scores = np.zeros(100)
    scores[[42, 55, 70]] = 1.0  # in a window; within a width after it (forgiven); a false one
    m = window_metrics(s, scores, 0.5)
    assert (m["detected"], m["windows"], m["flagged"], m["false_rows"]) == (1, 2, 3, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 0.5


def test_cli_prints_per_file_and_overall(nab_dir, tmp_path, capsys):
    assert evaluate_cli.main(["--data", str(nab_dir), "--detector", "zscore", "cusum", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "cat/a.csv" in text and "overall" in text and "NAB-style score" in text
    assert (tmp_path / "cat" / "cusum_a.csv").exists()
    assert evaluate_cli.main(["--data", str(nab_dir), "--detector", "nope"]) == 2


def test_truth_windows_cover_short_injections():
    times = np.arange(0.0, 10.0, 0.1)
    assert truth_windows(times, [(2.0, 2.0), (5.0, 6.0)], min_rows=5) == [(20, 24), (50, 60)]


def test_session_against_truth(tmp_path):
    from lib.store.schema import apply_migrations

    db = tmp_path / "v.duckdb"
    conn = duckdb.connect(str(db))
    apply_migrations(conn)
    conn.execute("INSERT INTO sessions (session_id, started_at) VALUES ('s1', TIMESTAMP '2024-01-01 00:00:00')")
    vals = 20 + np.random.default_rng(1).normal(0, 0.2, 600)
    vals[400] += 10
    for i, v in enumerate(vals):
        conn.execute(
            "INSERT INTO readings (session_id, seq, sensor, ts, value) VALUES "
            "('s1', ?, 'temp', TIMESTAMP '2024-01-01 00:00:00' + to_microseconds(?), ?)",
            [i, i * 100_000, float(v)],
        )
    conn.execute(
        "INSERT INTO truth VALUES ('r1', 'temp', 'spike', TIMESTAMP '2024-01-01 00:00:40',"
        " TIMESTAMP '2024-01-01 00:00:40')"
    )
    conn.close()
    series = session_series(db)
    assert len(series) == 1 and series[0].windows == [(400, 404)]
    assert evaluate(series, "zscore")["overall"]["recall"] == 1.0


# --- a detector set as an operator sees it ----------------------------------------------------


def _hand_stream():
    """Two sensors, a reading a second each (b half a second later), three injections and a
    dropout whose readings are known, and a legitimate set-point change on a at 2.5 s."""
    from lib.detect.evaluation import Injected, Stream
    from lib.ingest.simulator import SetpointChange

    ta = np.arange(0.0, 20.0)  # a: 20 readings, 0..19 s
    tb = np.concatenate([np.arange(0.5, 16.0), [18.5, 19.5]])  # b: 18, silent 16..18 s
    order = np.argsort(np.concatenate([ta, tb]), kind="stable")
    sensor = np.concatenate([np.zeros(len(ta), int), np.ones(len(tb), int)])[order]
    t = np.concatenate([ta, tb])[order]
    injected = [
        Injected("a", "spike", 5.0, 5.0, 5, 5),
        Injected("b", "level_shift", 9.7, 12.0, 10, 12),
        Injected("a", "dip", 15.0, 15.0, 15, 15),
        Injected("b", "dropout", 16.0, 18.0, 16, 15),
    ]
    return Stream(
        "hand",
        ["a", "b"],
        sensor,
        t,
        np.zeros(len(t)),
        t,
        injected,
        [SetpointChange("a", 2.5, 0.0, 3.0)],
        quiet_s=2.0,
        seconds=20.0,
        seed=0,
    )


def test_set_score_counts_a_hand_made_case_exactly():
    from lib.detect.evaluation import score_set

    stream = _hand_stream()
    fa, fb = np.zeros(20, bool), np.zeros(18, bool)
    fa[[1, 3, 6, 18]] = True  # 1: in the warm-up (not counted); 6: the spike, a reading late
    fb[[4, 14]] = True  # 14: the level shift's last reading + 2 (the tolerance)
    ja = np.ones(20, bool)
    ja[0] = False  # initializing
    silences = [("b", 17.0), ("a", 3.0)]  # the dropout's, told 1 s in; one out of the blue
    events = {"a": [(3, 3), (5, 7)], "b": [(14, 14)]}
    r = score_set(
        stream, {"a": (ja, fa), "b": (np.ones(18, bool), fb)}, silences, tolerance=2, settle_s=10.0, events=events
    )
    # normal: a 2..19 less the spike's 5..7 and the dip's 15..17 = 12; b 2..17 less 10..14 = 11
    assert (r["normal"], r["flagged_normal"]) == (23, 3)  # a 3, a 18, b 4
    assert r["false_alarm_rate"] == 3 / 23
    assert r["after_setpoint_change"] == 1  # a 3 (2.5 s <= 3 s < 12.5 s)
    k = r["kinds"]
    assert (k["spike"]["caught"], k["spike"]["n"]) == (1, 1)
    assert k["spike"]["delay_readings"] == {"median": 1.0, "max": 1.0} and k["spike"]["delay_s"]["max"] == 1.0
    assert (k["level_shift"]["caught"], k["level_shift"]["delay_readings"]["max"]) == (1, 4.0)
    # ... 2 readings after its last one: caught, but not while it lasted; the spike's flag was within the tolerance
    assert (k["level_shift"]["caught_while_on"], k["spike"]["caught_while_on"], k["dropout"]["caught_while_on"]) == (
        0,
        1,
        1,
    )
    assert k["level_shift"]["delay_s"]["max"] == pytest.approx(14.5 - 9.7)
    assert (k["dip"]["caught"], k["dip"]["n"], k["dip"]["recall"], k["dip"]["delay_s"]) == (0, 1, 0.0, None)
    assert (k["dropout"]["caught"], k["dropout"]["delay_s"], k["dropout"]["delay_readings"]) == (
        1,
        {"median": 1.0, "max": 1.0},
        None,
    )
    assert r["false_silences"] == 1
    assert (r["events"], r["false_events"], r["longest_event"]) == (3, 1, 3)
    # a tighter tolerance misses the level shift (its flag is 2 readings after the last one)
    tight = score_set(stream, {"a": (ja, fa), "b": (np.ones(18, bool), fb)}, silences, tolerance=1)
    assert tight["kinds"]["level_shift"]["caught"] == 0 and tight["flagged_normal"] == 4


def test_set_evaluation_runs_the_workers_judge_rules_and_decision(tmp_path):
    """A small generated scenario through the real Judge: the no-data rule catches every dropout a
    set-up silence later, the stuck rule every flatline, and min_agree is the worker's."""
    import dataclasses

    from lib.config import load_config
    from lib.detect.evaluation import evaluate_set, generate_stream, judge_stream, set_flags
    from lib.ingest.simulator import scenario_from_dict

    scenario = scenario_from_dict(
        {
            "rate": 10,
            "quiet_s": 30,
            "spacing_s": 5,
            "sensors": {
                "t": {
                    "base": 20.0,
                    "amplitude": 1.0,
                    "period_s": 60,
                    "noise": 0.2,
                    "adc_bits": 10,
                    "adc_min": 0.0,
                    "adc_max": 110.0,
                    "setpoints": [0.0, 2.0],
                    "setpoint_every_s": 40,
                }
            },
            "anomalies": [
                {"kind": "dropout", "sensor": "t", "every_s": 15, "duration_s": 3.0},
                {"kind": "flatline", "sensor": "t", "every_s": 15, "duration_s": 3.0},
                {"kind": "spike", "sensor": "t", "every_s": 10, "magnitude": 30},
            ],
        }
    )
    stream = generate_stream(scenario, 400, seed=3)
    assert stream.setpoint_changes and {i.kind for i in stream.injected} == {"dropout", "flatline", "spike"}
    base = load_config(env={})
    config = dataclasses.replace(
        base,
        detection=dataclasses.replace(
            base.detection, detectors=("zscore", "dbscan"), rules={"*": {"no_data_s": 1.0, "stuck_n": 15}}
        ),
        events=dataclasses.replace(base.events, min_agree=2),
    )
    res = evaluate_set(config, stream, singles=False)
    rows = {r["row"]: r for r in res["rows"]}
    assert res["rules"] == ["rule:stuck", "rule:no_data"]
    drop = rows["set"]["kinds"]["dropout"]
    assert drop["n"] >= 5 and drop["recall"] == 1.0
    # the last reading comes 0.1 s before a dropout starts (10 lines/s, one sensor), and the silence
    # is told on the first line due more than 1 s after it: 1.0 s after the start, every time
    assert drop["delay_s"] == {"median": pytest.approx(1.0), "max": pytest.approx(1.0)}
    assert rows["rules"]["kinds"]["flatline"]["recall"] == 1.0
    # the set flags a reading when both detectors agree or a rule fires, exactly
    judged = judge_stream(config, stream)
    _, both = set_flags(judged, "t")
    cols = judged.columns["t"]
    assert (both == ((cols["zscore"][1] & cols["dbscan"][1]) | cols["rule:stuck"][1])).all()
    assert rows["zscore"]["what"] == rows["dbscan"]["what"] == "member"


def test_set_cli_prints_the_table_and_json(tmp_path, capsys, monkeypatch):
    scenario = tmp_path / "small.toml"
    scenario.write_text(
        "rate = 10\nquiet_s = 20\n[sensors.t]\nbase = 20.0\nnoise = 0.2\n"
        '[[anomalies]]\nkind = "spike"\nsensor = "t"\nevery_s = 10\nmagnitude = 30\n'
        '[[anomalies]]\nkind = "dropout"\nsensor = "t"\nevery_s = 30\nduration_s = 3\n'
    )
    args = ["--set", "--scenario", str(scenario), "--seconds", "200", "--no-singles", "--detector", "zscore"]
    # the evaluation reads the configuration as the workers do
    monkeypatch.setenv("VIGIE_DETECTION_RULES", '{"*": {"no_data_s": 1}}')
    assert evaluate_cli.main(args) == 0
    table = capsys.readouterr().out
    assert "scenario small: seed 1, 200 s" in table and "set: zscore" in table
    assert evaluate_cli.main(args + ["--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert [r["row"] for r in res["rows"]] == ["set", "zscore", "rules"] and res["scenario"]["injections"]["spike"] > 5
    assert res["rows"][0]["kinds"]["dropout"]["recall"] == 1.0
    assert evaluate_cli.main(["--set", "--detector", "nope"]) == 2
