"""Evaluation: replay labelled series through a registered detector, reading by reading, and
measure it the way NAB does (`lib.detect.nab_score`) and by window precision / recall / F1.

Two sources of labelled series:
- NAB-format folders: `<category>/<name>.csv` with `timestamp,value`, and a windows file in NAB's
  `combined_windows.json` format. Results are written in NAB's format,
  `<out>/<category>/<detector>_<name>.csv` with `timestamp,value,anomaly_score,label`.
- A recorded session in the DuckDB file against the simulator's injected truth (`truth` table),
  or a series generated in-process from a scenario (`simulated_series`), one series per sensor.

Window metrics: a window is detected when at least one of its scored rows is flagged; precision
is the share of flagged rows that fall inside a window (or within a window's width after it, where
NAB also forgives); recall is the share of windows detected; F1 combines them. Scores while a
detector is initializing are 0 (as NAB does for its probationary rows).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from lib.detect import detectors
from lib.detect.nab_score import FileScorer, corpus_score, probationary_length, window_rows


@dataclass
class Series:
    """One labelled series: `name` is `<category>/<file>.csv` for NAB data."""
    name: str
    timestamps: list
    values: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)   # inclusive row ranges


def load_nab(root: str | Path, windows_file: str | Path | None = None,
             names: Iterable[str] | None = None) -> list[Series]:
    """The NAB-format CSVs under `root` (sorted), labelled from `windows_file` when given (a file
    absent from it has no windows)."""
    root = Path(root)
    wins = json.loads(Path(windows_file).read_text()) if windows_file else {}
    wanted = set(names) if names else None
    out = []
    for path in sorted(root.glob("*/*.csv")):
        name = path.relative_to(root).as_posix()
        if wanted is not None and name not in wanted:
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or set(rows[0]) < {"timestamp", "value"}:
            raise ValueError(f"{path}: expected columns timestamp,value")
        ts = [r["timestamp"] for r in rows]
        vals = np.array([float(r["value"]) for r in rows])
        windows = window_rows(ts, [(_nab_ts(a), _nab_ts(b)) for a, b in wins.get(name, [])]) if wins else []
        out.append(Series(name, ts, vals, windows))
    if not out:
        raise ValueError(f"no <category>/<name>.csv files under {root}")
    return out


def _nab_ts(s: str) -> str:
    # combined_windows.json writes "2014-04-10 07:15:00.000000"; the CSVs "2014-04-10 07:15:00"
    return s[:-7] if s.endswith(".000000") else s


def run_detector(name: str, values: np.ndarray, params: Mapping[str, Any] | None = None,
                 chunk: int = 1000, progress=None) -> np.ndarray:
    """Anomaly scores of a fresh detector over `values`, each scored before it is learnt (the
    detector's batch path, in chunks as a live worker would get them); 0 while initializing."""
    det, _ = detectors.build(name, params)
    scores = np.zeros(len(values))
    for start in range(0, len(values), chunk):
        part = det.score_learn_many([float(v) for v in values[start:start + chunk]])
        scores[start:start + len(part)] = [s if ready else 0.0 for ready, s in part]
        if progress is not None:
            progress.update(len(part))
    return scores


def write_nab_results(out_dir: str | Path, detector: str, series: Series, scores: np.ndarray) -> Path:
    category, fname = series.name.split("/", 1)
    path = Path(out_dir) / category / f"{detector}_{fname}"
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.zeros(len(series.values), dtype=int)
    for a, b in series.windows:
        label[a:b + 1] = 1
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for t, v, s, lab in zip(series.timestamps, series.values, scores, label):
            w.writerow([t, repr(float(v)) if not float(v).is_integer() else int(v), f"{s:.6f}", lab])
    return path


def window_metrics(series: Series, scores: np.ndarray, threshold: float) -> dict:
    """Precision / recall / F1 of detected windows after the probationary rows (see module doc)."""
    n = len(scores)
    scored = np.arange(n) >= probationary_length(n)
    flagged = (np.asarray(scores) >= threshold) & scored
    covered = np.zeros(n, dtype=bool)
    detected = 0
    counted = 0
    for a, b in series.windows:
        covered[a:min(n, b + 1 + (b - a + 1))] = True
        if scored[b]:
            counted += 1
            detected += bool(flagged[a:b + 1].any())
    n_flag = int(flagged.sum())
    good = int((flagged & covered).sum())
    precision = good / n_flag if n_flag else (1.0 if counted == 0 else 0.0)
    recall = detected / counted if counted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "windows": counted,
            "detected": detected, "flagged": n_flag, "false_rows": n_flag - good}


def evaluate(series: list[Series], detector: str, params: Mapping[str, Any] | None = None,
             threshold: float | None = None, out_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Score `detector` on every series: the NAB-style score (one threshold over the corpus,
    chosen unless given) and window metrics per file and overall at that threshold."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(s.values) for s in series), unit="reading", desc=detector, leave=False)
    all_scores = []
    try:
        for s in series:
            sc = run_detector(detector, s.values, params, progress=bar)
            all_scores.append(sc)
            if out_dir is not None:
                write_nab_results(out_dir, detector, s, sc)
    finally:
        if bar is not None:
            bar.close()
    scorers = [FileScorer(s.name, len(s.values), s.windows) for s in series]
    nab = corpus_score(list(zip(scorers, all_scores)), threshold)
    th = nab["threshold"]
    per_file = {}
    totals = {"windows": 0, "detected": 0, "flagged": 0, "false_rows": 0}
    for s, sc in zip(series, all_scores):
        m = window_metrics(s, sc, th)
        m["nab_raw"] = nab["files"][s.name]["raw"]
        per_file[s.name] = m
        for k in totals:
            totals[k] += m[k]
    p = (totals["flagged"] - totals["false_rows"]) / totals["flagged"] if totals["flagged"] else 0.0
    r = totals["detected"] / totals["windows"] if totals["windows"] else 1.0
    overall = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, **totals}
    return {"detector": detector, "threshold": th, "nab_score": nab["score"], "nab_raw": nab["raw"],
            "overall": overall, "files": per_file}


def format_report(result: dict) -> str:
    lines = [f"detector {result['detector']}: threshold {result['threshold']:.4f}"]
    lines.append(f"{'file':58s} {'windows':>7s} {'found':>5s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'NAB raw':>8s}")
    for name, m in result["files"].items():
        lines.append(f"{name:58s} {m['windows']:7d} {m['detected']:5d} {m['precision']:6.3f} "
                     f"{m['recall']:6.3f} {m['f1']:6.3f} {m['nab_raw']:8.3f}")
    o = result["overall"]
    lines.append(f"{'overall':58s} {o['windows']:7d} {o['detected']:5d} {o['precision']:6.3f} "
                 f"{o['recall']:6.3f} {o['f1']:6.3f} {result['nab_raw']:8.3f}")
    lines.append(f"NAB-style score (standard profile, 0 = null detector, 100 = perfect): {result['nab_score']:.1f}")
    return "\n".join(lines)


# --- simulator truth -------------------------------------------------------------------------

def truth_windows(times: np.ndarray, spans: list[tuple[float, float]], min_rows: int = 5) -> list[tuple[int, int]]:
    """Row windows for truth spans (start, end) in the readings' time base: every reading from the
    span's start to its end, and at least `min_rows` readings (a one-reading spike's effect on a
    detector that needs a few readings to react still counts, as NAB's windows allow for)."""
    out = []
    for start, end in sorted(spans):
        a = int(np.searchsorted(times, start, side="left"))
        if a >= len(times):
            continue
        b = max(int(np.searchsorted(times, end, side="right")) - 1, a + min_rows - 1)
        out.append((a, min(b, len(times) - 1)))
    merged: list[tuple[int, int]] = []
    for a, b in out:
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def simulated_series(scenario, seconds: float, rate_per_sensor: float = 10.0, seed: int = 0,
                     min_rows: int = 5, kinds: Iterable[str] | None = None, t0: float = 0.0) -> list[Series]:
    """One labelled series per sensor, generated in-process with the simulator's SignalModel (the
    same signals and injections a live run would write; dropped and malformed readings are absent
    from the series, as they would be from the stored readings). `kinds` keeps only those
    injections as windows (all by default). `t0` is the simulated time of the first reading."""
    kinds = set(kinds) if kinds is not None else None
    from lib.ingest.protocol import Parsed, parse_line
    from lib.ingest.simulator import SignalModel
    model = SignalModel(scenario, seed=seed)
    dt = 1.0 / rate_per_sensor
    rows: dict[str, list[tuple[float, float]]] = {s.name: [] for s in scenario.sensors}
    spans: dict[str, list[tuple[float, float]]] = {s.name: [] for s in scenario.sensors}
    for i in range(int(seconds * rate_per_sensor)):
        t = t0 + i * dt
        for spec in scenario.sensors:
            line, started = model.line(spec, t)
            for inj in started:
                if kinds is None or inj.kind in kinds:
                    spans[inj.sensor].append((inj.start, max(inj.end, inj.start)))
            if line is None:
                continue
            parsed = parse_line(line)   # as the producer parses it: malformed lines are rejects
            if isinstance(parsed, Parsed) and parsed.sensor == spec.name:
                rows[spec.name].append((t, parsed.value))
    out = []
    for name, r in rows.items():
        times = np.array([t for t, _ in r])
        out.append(Series(f"sim/{name}.csv", [f"{t:.3f}" for t in times], np.array([v for _, v in r]),
                          truth_windows(times, spans[name], min_rows)))
    return out


def session_series(db_path: str | Path, session: str | None = None, min_rows: int = 5) -> list[Series]:
    """One labelled series per sensor of a recorded session (the latest when `session` is None),
    labelled with the simulator's truth rows that fall within the session."""
    from lib.store.reader import read_db
    with read_db(Path(db_path)) as conn:
        if session is None:
            row = conn.execute("SELECT session_id FROM sessions ORDER BY started_at DESC LIMIT 1").fetchone()
            if row is None:
                raise ValueError(f"{db_path}: no session recorded")
            session = row[0]
        readings = conn.execute(
            "SELECT sensor, epoch_us(ts), value FROM readings WHERE session_id = ? ORDER BY sensor, seq",
            [session]).fetchall()
        truth = conn.execute("SELECT sensor, epoch_us(started_at), epoch_us(ended_at) FROM truth").fetchall()
    if not readings:
        raise ValueError(f"{db_path}: no readings in session {session}")
    by_sensor: dict[str, list[tuple[int, float]]] = {}
    for sensor, ts, value in readings:
        by_sensor.setdefault(sensor, []).append((ts, value))
    out = []
    for sensor, r in sorted(by_sensor.items()):
        times = np.array([t for t, _ in r], dtype=float)
        spans = [(float(a), float(b)) for s, a, b in truth
                 if s == sensor and times[0] <= a <= times[-1]]
        out.append(Series(f"{session}/{sensor}.csv", [str(int(t)) for t in times],
                          np.array([v for _, v in r]), truth_windows(times, spans, min_rows)))
    return out
