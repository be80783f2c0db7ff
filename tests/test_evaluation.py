"""The evaluation on small slices: NAB files in and NAB results format out, window metrics,
the CLI, simulator-generated truth and a recorded session against the truth table."""
import csv
import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from lib.detect.evaluation import (Series, evaluate, load_nab, session_series, simulated_series, truth_windows,
                            window_metrics)
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
    scores[[42, 55, 70]] = 1.0      # in a window; within a width after it (forgiven); a false one
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


def test_simulated_series_labels_every_value_kind():
    from bench.bench_detectors import VALUE_KINDS, sim_scenario
    series = simulated_series(sim_scenario(), 40, kinds=VALUE_KINDS)
    assert {s.name for s in series} == {"sim/humidite.csv", "sim/pression.csv"}
    assert sum(len(s.windows) for s in series) > 0
    assert all(np.isfinite(s.values).all() for s in series)


def test_session_against_truth(tmp_path):
    from lib.store.schema import apply_migrations
    db = tmp_path / "v.duckdb"
    conn = duckdb.connect(str(db))
    apply_migrations(conn)
    conn.execute("INSERT INTO sessions (session_id, started_at) VALUES ('s1', TIMESTAMP '2024-01-01 00:00:00')")
    vals = 20 + np.random.default_rng(1).normal(0, 0.2, 600)
    vals[400] += 10
    for i, v in enumerate(vals):
        conn.execute("INSERT INTO readings (session_id, seq, sensor, ts, value) VALUES "
                     "('s1', ?, 'temp', TIMESTAMP '2024-01-01 00:00:00' + to_microseconds(?), ?)",
                     [i, i * 100_000, float(v)])
    conn.execute("INSERT INTO truth VALUES ('r1', 'temp', 'spike', TIMESTAMP '2024-01-01 00:00:40',"
                 " TIMESTAMP '2024-01-01 00:00:40')")
    conn.close()
    series = session_series(db)
    assert len(series) == 1 and series[0].windows == [(400, 404)]
    assert evaluate(series, "zscore")["overall"]["recall"] == 1.0
