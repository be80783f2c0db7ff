"""Evaluation: replay labelled series through a registered detector, reading by reading, and
measure it the way NAB does (`lib.detect.nab_score`) and by window precision / recall / F1.

Two sources of labelled series:
- NAB-format folders: `<category>/<name>.csv` with `timestamp,value`, and a windows file in NAB's
  `combined_windows.json` format. Results are written in NAB's format,
  `<out>/<category>/<detector>_<name>.csv` with `timestamp,value,anomaly_score,label`.
- A recorded session in the DuckDB file against the simulator's injected truth (`truth` table),
  or a stream generated in-process from a scenario (`generate_stream`), as the worker receives it.

Window metrics: a window is detected when at least one of its scored rows is flagged; precision
is the share of flagged rows that fall inside a window (or within a window's width after it, where
NAB also forgives); recall is the share of windows detected; F1 combines them. Scores while a
detector is initializing are 0 (as NAB does for its probationary rows).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lib.detect import detectors
from lib.detect.nab_score import FileScorer, corpus_score, probationary_length, window_rows
from lib.store import named


@dataclass
class Series:
    """One labelled series: `name` is `<category>/<file>.csv` for NAB data."""

    name: str
    timestamps: list
    values: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)  # inclusive row ranges


def load_nab(
    root: str | Path, windows_file: str | Path | None = None, names: Iterable[str] | None = None
) -> list[Series]:
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


def run_detector(
    name: str, values: np.ndarray, params: Mapping[str, Any] | None = None, chunk: int = 1000, progress=None
) -> np.ndarray:
    """Anomaly scores of a fresh detector over `values`, each scored before it is learnt (the
    detector's batch path, in chunks as a live worker would get them); 0 while initializing."""
    det, _ = detectors.build(name, params)
    scores = np.zeros(len(values))
    for start in range(0, len(values), chunk):
        part = det.score_learn_many([float(v) for v in values[start : start + chunk]])
        scores[start : start + len(part)] = [s if ready else 0.0 for ready, s in part]
        if progress is not None:
            progress.update(len(part))
    return scores


def write_nab_results(out_dir: str | Path, detector: str, series: Series, scores: np.ndarray) -> Path:
    category, fname = series.name.split("/", 1)
    path = Path(out_dir) / category / f"{detector}_{fname}"
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.zeros(len(series.values), dtype=int)
    for a, b in series.windows:
        label[a : b + 1] = 1
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
        covered[a : min(n, b + 1 + (b - a + 1))] = True
        if scored[b]:
            counted += 1
            detected += bool(flagged[a : b + 1].any())
    n_flag = int(flagged.sum())
    good = int((flagged & covered).sum())
    precision = good / n_flag if n_flag else (1.0 if counted == 0 else 0.0)
    recall = detected / counted if counted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "windows": counted,
        "detected": detected,
        "flagged": n_flag,
        "false_rows": n_flag - good,
    }


def evaluate(
    series: list[Series],
    detector: str,
    params: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> dict:
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
    profiles = {name: r["score"] for name, r in nab_profiles(series, all_scores).items()} if threshold is None else {}
    return {
        "detector": detector,
        "threshold": th,
        "nab_score": nab["score"],
        "nab_raw": nab["raw"],
        "profiles": profiles,
        "overall": overall,
        "files": per_file,
    }


def format_report(result: dict) -> str:
    lines = [f"detector {result['detector']}: threshold {result['threshold']:.4f}"]
    lines.append(f"{'file':58s} {'windows':>7s} {'found':>5s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'NAB raw':>8s}")
    for name, m in result["files"].items():
        lines.append(
            f"{name:58s} {m['windows']:7d} {m['detected']:5d} {m['precision']:6.3f} "
            f"{m['recall']:6.3f} {m['f1']:6.3f} {m['nab_raw']:8.3f}"
        )
    o = result["overall"]
    lines.append(
        f"{'overall':58s} {o['windows']:7d} {o['detected']:5d} {o['precision']:6.3f} "
        f"{o['recall']:6.3f} {o['f1']:6.3f} {result['nab_raw']:8.3f}"
    )
    lines.append(f"NAB-style score (standard profile, 0 = null detector, 100 = perfect): {result['nab_score']:.1f}")
    if result.get("profiles"):
        lines.append(
            "each profile with its own best threshold: "
            + ", ".join(f"{name} {score:.1f}" for name, score in result["profiles"].items())
        )
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


def _latest(conn, db_path) -> str:
    session = named.latest_session_id(conn)
    if session is None:
        raise ValueError(f"{db_path}: no session recorded")
    return session


def latest_session(db_path: str | Path) -> str:
    """The id of the session that started last."""
    from lib.store.reader import read_db

    with read_db(Path(db_path)) as conn:
        return _latest(conn, db_path)


def session_series(db_path: str | Path, session: str | None = None, min_rows: int = 5) -> list[Series]:
    """One labelled series per sensor of a recorded session (the latest when `session` is None),
    labelled with the simulator's truth rows that fall within the session."""
    from lib.store.reader import read_db

    with read_db(Path(db_path)) as conn:  # through the store while it runs: named queries
        if session is None:
            session = _latest(conn, db_path)
        readings = named.session_readings_us(conn, session)
        truth = named.truth_us(conn)
    if not readings:
        raise ValueError(f"{db_path}: no readings in session {session}")
    by_sensor: dict[str, list[tuple[int, float]]] = {}
    for sensor, ts, value in readings:
        by_sensor.setdefault(sensor, []).append((ts, value))
    out = []
    for sensor, r in sorted(by_sensor.items()):
        times = np.array([t for t, _ in r], dtype=float)
        spans = [(float(a), float(b)) for s, a, b in truth if s == sensor and times[0] <= a <= times[-1]]
        out.append(
            Series(
                f"{session}/{sensor}.csv",
                [str(int(t)) for t in times],
                np.array([v for _, v in r]),
                truth_windows(times, spans, min_rows),
            )
        )
    return out


# --- a detector set as an operator sees it ----------------------------------------------------
#
# A configured set (the detectors of `[detection]` with their thresholds, the threshold rules of
# `[detection.rules]`, the `[events] min_agree` decision) judges a realistic scenario generated
# in-process, reading by reading through the worker's own `Judge`, and is measured the way an
# operator lives with it: the share of normal readings it flags, and per injected kind how many
# injections it catches and how soon.
#
# - An injection's readings are those the simulator changed (`SignalModel.applied`): from the first
#   to the last. It is caught when a reading from its first to `tolerance` readings after its last
#   is flagged; the delay counts from its first reading (in readings) and from its start (in
#   seconds) to the first such flag. "Caught while on": that first flag came before the injection
#   ended (for a one-reading kind, within the tolerance), not only when the signal came back.
# - A dropout changes no reading: it is caught when the no-data rule tells the sensor's silence
#   between the dropout's start and the `tolerance`-th reading after it, the delay counting in
#   seconds from its start. A silence told outside any dropout is a false silence.
# - Normal readings are every other reading judged after the scenario's quiet start (the
#   detectors' warm-up): not within an injection's readings or the `tolerance` after them.
#   Readings that follow a legitimate set-point change are normal; the flags among them are also
#   counted apart, since they are the false alarms an operator would most resent.

SET_KINDS = ("spike", "dip", "level_shift", "drift", "flatline", "noise", "dropout")
EVAL_EPOCH_US = 1_767_225_600_000_000  # 2026-01-01 UTC: the generated readings' clock starts here
#: the shipped realistic scenarios: tune settings on the first, measure on the second, that no one tuned on
SET_SCENARIOS = (
    ("tune", "data/scenarios/realistic-tune.toml", 1),
    ("held-out", "data/scenarios/realistic-heldout.toml", 2),
)


@dataclass
class Injected:
    """One injection as the readings show it: `first`..`last` index the sensor's readings it
    changed (a dropout: `first` is the first reading after it and `last` = `first` - 1)."""

    sensor: str
    kind: str
    start: float  # seconds of the scenario's clock
    end: float
    first: int
    last: int


@dataclass
class Stream:
    """A generated scenario as the detector worker receives it: readings in arrival order."""

    name: str
    sensors: list[str]
    sensor: np.ndarray  # the sensor index of each reading
    t: np.ndarray  # its time, seconds of the scenario's clock
    value: np.ndarray
    ticks: np.ndarray  # the time of every line the board was due to print (silences too)
    injected: list[Injected]
    setpoint_changes: list  # lib.ingest.simulator.SetpointChange, normal operation
    quiet_s: float  # no injection before this: readings before it are the warm-up
    seconds: float
    seed: int
    rejects: int = 0  # malformed lines: the producer's rejects, not readings

    def of(self, sensor: str) -> np.ndarray:
        """Indices (into the arrays above) of one sensor's readings, in order."""
        return np.flatnonzero(self.sensor == self.sensors.index(sensor))


def generate_stream(scenario, seconds: float, seed: int, name: str = "scenario", rate: float | None = None) -> Stream:
    """Play `scenario` for `seconds` of its clock with the simulator's own SignalModel and board
    order (`scenario_ticks`), parsing each line as the producer does."""
    from lib.ingest.protocol import Parsed, parse_line
    from lib.ingest.simulator import SignalModel, scenario_ticks

    model = SignalModel(scenario, seed=seed)
    names = [s.name for s in scenario.sensors]
    rate = rate or scenario.rate or 20.0
    count = {n: 0 for n in names}
    sensor, times, values, ticks = [], [], [], []
    found: dict[int, tuple[object, Injected]] = {}  # by id(), holding the Injection so no id is reused
    rejects = 0
    for i, tick in enumerate(scenario_ticks(model, rate)):
        if tick.due_s >= seconds:
            break
        ticks.append(tick.due_s)
        me = names[i % len(names)]
        for inj in tick.started:
            if inj.kind in SET_KINDS:
                # the first reading of its sensor at or after its start (a dropout: after it too)
                found[id(inj)] = (
                    inj,
                    Injected(inj.sensor, inj.kind, inj.start, inj.end, count[inj.sensor], count[inj.sensor] - 1),
                )
        parsed = parse_line(tick.line) if tick.line is not None else None
        if parsed is not None and not isinstance(parsed, Parsed):
            rejects += 1
        if isinstance(parsed, Parsed) and parsed.sensor == me:
            for inj in model.applied:
                got = found.get(id(inj), (None, None))[1]
                if got is not None and got.kind != "dropout":
                    got.last = count[me]
            sensor.append(names.index(me))
            times.append(tick.due_s)
            values.append(parsed.value)
            count[me] += 1
    injected = [inj for _, inj in found.values() if inj.kind == "dropout" or inj.last >= inj.first]
    return Stream(
        name,
        names,
        np.array(sensor, dtype=int),
        np.array(times),
        np.array(values),
        np.array(ticks),
        injected,
        list(model.setpoint_changes),
        scenario.quiet_s,
        seconds,
        seed,
        rejects,
    )


@dataclass
class Judged:
    """What a Judge said over a stream, per sensor: {column: (judged, flagged)} boolean arrays over
    the sensor's readings, column being a detector or "rule:<name>"; and the silences told,
    (sensor, seconds of the scenario's clock)."""

    columns: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    silences: list[tuple[str, float]]
    min_agree: dict[str, int]


def judge_stream(config, stream: Stream, batch: int = 500) -> Judged:
    """Run `config`'s detection (lib.detect.detection.Judge: the sensors' plans, thresholds and
    rules) over the stream, `batch` readings at a time as polls bring them, and the no-data rule
    at every line's due time (the clock the worker's silence check follows while the board plays)."""
    from lib.detect.detection import Judge
    from lib.detect.events import policy_for

    judge = Judge(config)
    letters: dict[str, dict[str, list[str]]] = {s: {} for s in stream.sensors}
    ts_us = (EVAL_EPOCH_US + np.round(stream.t * 1e6)).astype(np.int64)
    for lo in range(0, len(stream.t), batch):
        part = np.arange(lo, min(lo + batch, len(stream.t)))
        groups = []
        for k, name in enumerate(stream.sensors):
            mine = part[stream.sensor[part] == k]
            if len(mine):
                groups.append((name, stream.value[mine].tolist(), ts_us[mine].tolist()))
        for (name, _, _), cols in zip(groups, judge.judge_sensors(groups)):
            for col, (codes, _) in cols.items():
                letters[name].setdefault(col, []).append(codes)
    columns = {}
    for name, cols in letters.items():
        columns[name] = {}
        for col, parts in cols.items():
            codes = np.frombuffer("".join(parts).encode("ascii"), dtype=np.uint8)
            columns[name][col] = (codes != ord("i"), codes == ord("a"))
    # the no-data rule: the worker tells a silence once the sensor's last reading is older than
    # its no-data limit at the clock it checks with
    silences = []
    at = 0
    seq = np.arange(1, len(stream.t) + 1)
    for now in stream.ticks:
        now_us = EVAL_EPOCH_US + round(now * 1e6)
        for sensor, _, _, _ in judge.silent(now_us):
            silences.append((sensor, float(now)))
        while at < len(stream.t) and stream.t[at] <= now:
            judge.note_last(stream.sensors[stream.sensor[at]], stream.name, int(seq[at]), int(ts_us[at]))
            at += 1
    return Judged(columns, silences, {s: policy_for(config, s).min_agree for s in stream.sensors})


def set_flags(
    judged: Judged, sensor: str, members: Iterable[str] | None = None, min_agree: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(judged, flagged) of the sensor's readings by the decision rule the worker applies
    (lib.detect.events.decide): `members` (default: every column) with the sensor's min_agree."""
    from lib.detect.events import decide

    cols = judged.columns[sensor]
    names = [c for c in cols if members is None or c in members]
    n = len(next(iter(cols.values()))[0]) if cols else 0
    if not names:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    code = {
        name: np.where(cols[name][1], ord("a"), np.where(cols[name][0], ord("n"), ord("i"))).astype(np.uint8)
        for name in names
    }
    _, _, _, flagged = decide(
        {name: (c.tobytes().decode("ascii"), ()) for name, c in code.items()},
        n,
        judged.min_agree[sensor] if min_agree is None else min_agree,
    )
    ready = np.any([cols[name][0] for name in names], axis=0)
    return ready, flagged


def set_events(config, stream: Stream, judged: Judged) -> dict[str, list[tuple[int, int]]]:
    """The anomaly events the worker would open for the set (lib.detect.events, each sensor's
    policy), as (first, last) indices into each sensor's readings; a silence's event ends on the
    reading after it. Silences are fed between the readings they fall between, as live."""
    from lib.detect.events import EventBook

    book = EventBook(config)
    seq = np.arange(1, len(stream.t) + 1)
    ts_us = (EVAL_EPOCH_US + np.round(stream.t * 1e6)).astype(np.int64)
    out: dict[str, list[tuple[int, int]]] = {}
    for sensor in stream.sensors:
        idx = stream.of(sensor)
        cols = judged.columns[sensor]
        letters = {
            c: np.where(f, ord("a"), np.where(r, ord("n"), ord("i"))).astype(np.uint8).tobytes().decode()
            for c, (r, f) in cols.items()
        }
        zeros = [0.0] * len(idx)
        tracker = book.tracker(sensor)
        where = {int(s): k for k, s in enumerate(seq[idx])}  # seq -> the sensor's reading index
        found: dict[str, object] = {}
        cuts = sorted(int(np.searchsorted(stream.t[idx], at, side="right")) for s, at in judged.silences if s == sensor)
        lo = 0
        for cut in cuts + [len(idx)]:
            if cut > lo:
                part = slice(lo, cut)
                for ev in tracker.feed_columns(
                    stream.name,
                    seq[idx][part].tolist(),
                    ts_us[idx][part].tolist(),
                    stream.value[idx][part].tolist(),
                    {c: (v[lo:cut], zeros[lo:cut]) for c, v in letters.items()},
                ):
                    found[ev.id] = ev
            if cut < len(idx) and cut > 0:
                for ev in tracker.silence(stream.name, int(seq[idx][cut - 1]), int(ts_us[idx][cut - 1])):
                    found[ev.id] = ev
            lo = cut
        out[sensor] = [(where[ev.start_seq], where[ev.end_seq]) for ev in found.values()]
    return out


def score_set(
    stream: Stream,
    flags: Mapping[str, tuple[np.ndarray, np.ndarray]],
    silences: Iterable[tuple[str, float]] = (),
    tolerance: int = 3,
    settle_s: float = 60.0,
    events: Mapping[str, list[tuple[int, int]]] | None = None,
) -> dict:
    """Measure one set of flags (per sensor: (judged, flagged) over its readings) and silences
    against the stream's truth, as the section's comment says. `settle_s`: readings this long
    after a set-point change count as "after a set-point change". `events` (per sensor, (first,
    last) reading indices): how many there are, and how many touch no injection (false events)."""
    normal = flagged_normal = near_setpoint = 0
    kinds = {k: {"n": 0, "caught": 0, "while_on": 0, "delay_readings": [], "delay_s": []} for k in SET_KINDS}
    told = {}
    for sensor, at in silences:
        told.setdefault(sensor, []).append(at)
    used_silences = set()
    n_events = false_events = longest = 0
    changes = {}
    for c in stream.setpoint_changes:
        changes.setdefault(c.sensor, []).append(c.at)
    for sensor in stream.sensors:
        idx = stream.of(sensor)
        t = stream.t[idx]
        judged, flagged = flags.get(sensor, (np.zeros(len(idx), bool), np.zeros(len(idx), bool)))
        injected = np.zeros(len(idx), dtype=bool)
        touched = np.zeros(len(idx), dtype=bool)  # where an event is caused by an injection
        for inj in (i for i in stream.injected if i.sensor == sensor):
            stop = min(inj.last + tolerance, len(idx) - 1)
            if inj.kind != "dropout":
                injected[inj.first : stop + 1] = True
            touched[max(inj.first - 1, 0) : stop + 1] = True  # a silence's event starts on the reading before
            if inj.start < stream.quiet_s:
                continue
            k = kinds[inj.kind]
            k["n"] += 1
            if inj.kind == "dropout":
                after = inj.first + max(tolerance - 1, 0)  # the tolerance-th reading after it
                until = t[after] if after < len(idx) else math.inf
                hits = [j for j, at in enumerate(told.get(sensor, [])) if inj.start <= at <= until]
                if hits:
                    k["caught"] += 1
                    k["while_on"] += bool(told[sensor][hits[0]] < (t[inj.first] if inj.first < len(idx) else math.inf))
                    k["delay_s"].append(float(told[sensor][hits[0]] - inj.start))
                    used_silences.update((sensor, j) for j in hits)
                continue
            hit = np.flatnonzero(flagged[inj.first : stop + 1])
            if len(hit):
                k["caught"] += 1
                # flagged while it lasted, not only when the signal came back at its end
                k["while_on"] += int(hit[0]) <= max(inj.last - inj.first, tolerance)
                k["delay_readings"].append(int(hit[0]))
                k["delay_s"].append(float(t[inj.first + hit[0]] - inj.start))
        is_normal = judged & ~injected & (t >= stream.quiet_s)
        normal += int(is_normal.sum())
        flagged_normal += int((is_normal & flagged).sum())
        after = np.zeros(len(idx), dtype=bool)
        for at in changes.get(sensor, []):
            after |= (t >= at) & (t < at + settle_s)
        near_setpoint += int((is_normal & flagged & after).sum())
        for first, last in (events or {}).get(sensor, []):
            if t[last] >= stream.quiet_s:
                n_events += 1
                false_events += not touched[first : last + 1].any()
                longest = max(longest, last - first + 1)
    false_silences = sum(1 for s, ats in told.items() for j, _ in enumerate(ats) if (s, j) not in used_silences)
    out_kinds = {}
    for kind, k in kinds.items():
        out_kinds[kind] = {
            "n": k["n"],
            "caught": k["caught"],
            "recall": k["caught"] / k["n"] if k["n"] else None,
            "caught_while_on": k["while_on"],
            "delay_readings": _spread(k["delay_readings"]),
            "delay_s": _spread(k["delay_s"]),
        }
    return {
        "normal": normal,
        "flagged_normal": flagged_normal,
        "false_alarm_rate": flagged_normal / normal if normal else None,
        "after_setpoint_change": near_setpoint,
        "false_silences": false_silences,
        "events": n_events if events is not None else None,
        "false_events": false_events if events is not None else None,
        "longest_event": longest if events is not None else None,
        "kinds": out_kinds,
    }


def _spread(xs: list) -> dict | None:
    if not xs:
        return None
    return {"median": float(np.median(xs)), "max": float(np.max(xs))}


def evaluate_set(config, stream: Stream, singles: bool = True, tolerance: int = 3) -> dict:
    """The configured set over one stream: a row for each of its members, for its rules, and for
    the set as the worker decides; with `singles`, a row for every registered detector alone
    (the configuration's parameters, no rules)."""
    import dataclasses

    members = list(config.detection.detectors)
    judged = judge_stream(config, stream)
    rules = sorted({c for cols in judged.columns.values() for c in cols if c.startswith("rule:")})
    if any(r for r in config.detection.rules.values() if r.get("no_data_s") or r.get("no_data_factor")):
        rules.append("rule:no_data")
    rows = []

    def row(label, what, cols, silences=(), min_agree=None, min_agree_shown=None, events=None):
        flags = {
            s: set_flags(judged if what != "single" else single_judged, s, cols, min_agree) for s in stream.sensors
        }
        r = score_set(stream, flags, silences, tolerance, events=events)
        rows.append({"row": label, "what": what, "min_agree": min_agree_shown, **r})

    single_judged = judged
    silences = judged.silences
    row(
        "set",
        "set",
        None,
        silences,
        min_agree_shown=sorted(set(judged.min_agree.values())),
        events=set_events(config, stream, judged),
    )
    for name in members:
        row(name, "member", [name], min_agree=1)
    if rules:
        row("rules", "rules", [r for r in rules if r != "rule:no_data"], silences, min_agree=1)
    if singles:
        others = [n for n in detectors.REGISTRY if n not in members]
        if others:
            alone = dataclasses.replace(
                config, detection=dataclasses.replace(config.detection, detectors=tuple(others), sensors={}, rules={})
            )
            single_judged = judge_stream(alone, stream)
            for name in others:
                row(name, "single", [name], min_agree=1)
    return {
        "scenario": stream_summary(stream),
        "members": members,
        "rules": rules,
        "thresholds": {n: _threshold(config, n) for n in dict.fromkeys(members + list(detectors.REGISTRY))},
        "tolerance": tolerance,
        "rows": rows,
    }


def _threshold(config, name: str) -> float:
    """The decision threshold `name` runs with under `config` (the registry's build decides it)."""
    import dataclasses

    from lib.detect.plan import sensor_plan

    alone = dataclasses.replace(config, detection=dataclasses.replace(config.detection, detectors=(name,), sensors={}))
    return detectors.build(name, sensor_plan(alone, "*")[name])[1].threshold


def stream_summary(stream: Stream) -> dict:
    n_kind = {k: sum(1 for i in stream.injected if i.kind == k and i.start >= stream.quiet_s) for k in SET_KINDS}
    return {
        "name": stream.name,
        "seed": stream.seed,
        "seconds": stream.seconds,
        "sensors": stream.sensors,
        "readings": len(stream.t),
        "rejects": stream.rejects,
        "injections": n_kind,
        "setpoint_changes": len(stream.setpoint_changes),
        "quiet_s": stream.quiet_s,
    }


def format_set_report(results: list[dict], role: Mapping[str, str] | None = None) -> str:
    """Two tables per scenario: false alarms and recall per kind; then the delays per kind."""
    out = []
    for res in results:
        sc = res["scenario"]
        label = (role or {}).get(sc["name"], "")
        label = f" ({label})" if label else ""
        kinds = ", ".join(f"{k} {n}" for k, n in sc["injections"].items())
        out.append(
            f"scenario {sc['name']}{label}: seed {sc['seed']}, {sc['seconds']:g} s, sensors "
            f"{', '.join(sc['sensors'])}; {sc['readings']:,} readings, {sum(sc['injections'].values())} "
            f"injections after the first {sc['quiet_s']:g} s ({kinds}), {sc['setpoint_changes']} "
            "legitimate set-point changes"
        )
        thresholds = ", ".join(f"{m} {res['thresholds'][m]:g}" for m in res["members"])
        out.append(
            f"set: {' + '.join(res['members'])} (thresholds {thresholds}); rules: "
            f"{', '.join(res['rules']) or 'none'}; tolerance {res['tolerance']} readings"
        )
        head = (
            f"{'row':14s} {'false alarms':>12s} {'setpt':>5s} {'silences':>8s} {'events':>9s} {'longest':>7s} "
            + " ".join(f"{k[:11]:>11s}" for k in SET_KINDS)
        )
        out.append(head)
        for r in res["rows"]:
            name = r["row"] + ("*" if r["what"] == "member" else "")
            fa = f"{100 * r['false_alarm_rate']:.2f}%" if r["false_alarm_rate"] is not None else "-"
            cells = []
            for k in SET_KINDS:
                m = r["kinds"][k]
                cells.append(f"{m['caught']:>3d}/{m['n']:<3d}{_pct(m['recall'])}" if m["n"] else f"{'-':>11s}")
            ev = f"{r['false_events']}/{r['events']}" if r["events"] is not None else "-"
            longest = f"{r['longest_event']}" if r["longest_event"] is not None else "-"
            out.append(
                f"{name:14s} {fa:>12s} {r['after_setpoint_change']:5d} {r['false_silences']:8d} {ev:>9s} "
                f"{longest:>7s} " + " ".join(f"{c:>11s}" for c in cells)
            )
        out.append(
            "caught while it lasted (the first flag before the injection's end; one-reading kinds: within "
            "the tolerance), not only when the signal came back"
        )
        out.append(f"{'row':14s} " + " ".join(f"{k[:11]:>11s}" for k in SET_KINDS))
        for r in res["rows"]:
            cells = [
                f"{r['kinds'][k]['caught_while_on']}/{r['kinds'][k]['n']}" if r["kinds"][k]["n"] else "-"
                for k in SET_KINDS
            ]
            out.append(f"{r['row']:14s} " + " ".join(f"{c:>11s}" for c in cells))
        out.append("delay to the first flag, median/max in readings (seconds); dropout: seconds to the silence")
        out.append(f"{'row':14s} " + " ".join(f"{k[:15]:>15s}" for k in SET_KINDS))
        for r in res["rows"]:
            cells = []
            for k in SET_KINDS:
                m = r["kinds"][k]
                dr, ds = m["delay_readings"], m["delay_s"]
                if ds is None:
                    cells.append("-")
                elif dr is None:
                    cells.append(f"({ds['median']:.1f}/{ds['max']:.1f}s)")
                else:
                    cells.append(f"{dr['median']:g}/{dr['max']:g} ({ds['median']:.1f}/{ds['max']:.1f}s)")
            out.append(f"{r['row']:14s} " + " ".join(f"{c:>15s}" for c in cells))
        out.append(
            "false alarms: share of normal readings flagged; setpt: how many of those came in the minute "
            "after a legitimate set-point change; silences: no-data silences outside any dropout; events: "
            "false/all anomaly events of the set (an event touching no injection is false), longest: its "
            "longest event in readings; a kind: caught/injected and recall; * a member of the set, judged alone"
        )
        out.append("")
    return "\n".join(out)


def _pct(x: float | None) -> str:
    return f" {100 * x:3.0f}%" if x is not None else ""


# --- operator labels fed back -------------------------------------------------------------------


def labelled_replay(
    config, sensor: str, values: Sequence[float], rejected: Mapping[int, str | None], batch: int = 200
) -> dict:
    """Replay one sensor's readings through the configured detectors twice, without and with the
    operator's rejections fed back (lib.detect.feedback), each taking effect right after the
    reading it rejects (as if answered at once). `rejected`: {reading index: detector or None
    for all}. Returns {detector: {"without": flags, "with": flags, "rejected_like": flags after
    the first rejection that score at most as high as a rejected reading, without feedback}}."""
    from lib.detect.detection import Judge

    def run(feedback: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        judge = Judge(config)
        floors: dict[tuple[str, str], float] = {}
        cols: dict[str, tuple[list, list]] = {}
        marks = sorted(rejected) if feedback else []
        start = 0
        for stop in [m + 1 for m in marks] + [len(values)]:
            for lo in range(start, stop, batch):
                part = [float(v) for v in values[lo : min(stop, lo + batch)]]
                for name, (codes, scores) in judge.judge_sensors([(sensor, part, None)])[0].items():
                    c = cols.setdefault(name, ([], []))
                    c[0].extend(ch == "a" for ch in codes)
                    c[1].extend(s if s is not None else 0.0 for s in scores)
            if stop - 1 in rejected and feedback:
                for name, (flags, scores) in cols.items():
                    wanted = rejected[stop - 1]
                    if flags[stop - 1] and not name.startswith("rule:") and wanted in (None, name):
                        floors[(sensor, name)] = max(floors.get((sensor, name), 0.0), scores[stop - 1])
                judge.apply_floors(floors)
            start = stop
        return {name: (np.array(f), np.array(s)) for name, (f, s) in cols.items()}

    plain, fed = run(False), run(True)
    first = min(rejected) if rejected else len(values)
    out = {}
    for name, (flags, scores) in plain.items():
        rejected_scores = [scores[i] for i in rejected if flags[i] and rejected[i] in (None, name)]
        like = 0
        if rejected_scores:
            after = np.arange(len(values)) > first
            like = int((flags & after & (scores <= max(rejected_scores))).sum())
        out[name] = {
            "without": int(flags.sum()),
            "with": int(fed[name][0].sum()),
            "rejected_like": like,
            "after_without": int(flags[first + 1 :].sum()),
            "after_with": int(fed[name][0][first + 1 :].sum()),
        }
    return out


def session_rejections(db_path: str | Path, session: str) -> dict[str, tuple[np.ndarray, dict[int, str | None]]]:
    """For each sensor of a recorded session with rejected flags: its readings in order, and
    {index of a rejected reading: the detector whose flag was rejected, or None for all}."""
    from lib.store.reader import read_db

    with read_db(Path(db_path)) as conn:
        rows = conn.execute(
            """
            SELECT r.sensor, r.value, l.verdict = 'rejected', l.detector
            FROM readings r LEFT JOIN labels l ON l.session_id = r.session_id AND l.seq = r.seq
            WHERE r.session_id = ? ORDER BY r.sensor, r.seq""",
            [session],
        ).fetchall()
    values: dict[str, list[float]] = {}
    marks: dict[str, dict[int, str | None]] = {}
    for sensor, value, rejected, detector in rows:
        vs = values.setdefault(sensor, [])
        if rejected:
            marks.setdefault(sensor, {})[len(vs)] = detector
        vs.append(value)
    return {s: (np.array(values[s]), m) for s, m in marks.items()}


def format_labelled_replay(results: Mapping[str, Mapping[str, dict]]) -> str:
    lines = [
        f"{'sensor':20s} {'detector':12s} {'flags':>7s} {'with labels':>11s} {'after 1st rejection':>19s}"
        f" {'with labels':>11s} {'like a rejected one':>19s}"
    ]
    for sensor, per in results.items():
        for name, r in per.items():
            lines.append(
                f"{sensor:20s} {name:12s} {r['without']:7d} {r['with']:11d} {r['after_without']:19d}"
                f" {r['after_with']:11d} {r['rejected_like']:19d}"
            )
    lines.append(
        "flags: readings flagged by the detector over the session; with labels: the same replay with "
        "each rejection fed back right after the reading it rejects; like a rejected one: flags after "
        "the first rejection scoring no higher than a rejected reading, without feedback"
    )
    return "\n".join(lines)


# --- NAB: every profile, and a cross-validated figure -------------------------------------------


def nab_scores(series: list[Series], detector: str, params: Mapping[str, Any] | None = None) -> list[np.ndarray]:
    """Each series' anomaly scores from a fresh `detector` (what NAB's results files hold)."""
    return [run_detector(detector, s.values, params) for s in series]


def nab_profiles(series: list[Series], scores: list[np.ndarray]) -> dict[str, dict]:
    """{profile: corpus_score} for NAB's three profiles, each with its own best threshold."""
    from lib.detect.nab_score import PROFILES

    out = {}
    for name, weights in PROFILES.items():
        scorers = [FileScorer(s.name, len(s.values), s.windows, dict(weights)) for s in series]
        out[name] = corpus_score(list(zip(scorers, scores)))
    return out


def category_of(series: Series) -> str:
    return series.name.split("/", 1)[0]


def cross_validate(series: list[Series], candidates: Mapping[str, list[np.ndarray]], profile: str = "standard") -> dict:
    """Leave one category out: for each category, the candidate (a parameter set's scores on
    every series) and the threshold that score best on the OTHER categories are chosen, and the
    left-out category is scored with them. Raw scores summed over the folds, normalised over all
    series as NAB does. With one candidate this is the threshold alone, cross-validated."""
    from lib.detect.nab_score import PROFILES, candidate_thresholds, normalised

    weights = PROFILES[profile]
    scorers = [FileScorer(s.name, len(s.values), s.windows, dict(weights)) for s in series]
    cats = sorted({category_of(s) for s in series})
    # raw score of every file at every threshold, per candidate (thresholds from all its scores)
    table = {}
    for key, scores in candidates.items():
        ths = candidate_thresholds(scores)
        per_file = np.array([[r["raw"] for r in fs.score_many(sc, ths)] for fs, sc in zip(scorers, scores)])
        table[key] = (ths, per_file)
    total, folds = 0.0, []
    for cat in cats:
        train = np.array([category_of(s) != cat for s in series])
        best = max(
            (
                (per_file[train].sum(axis=0).max(), key, ths[int(np.argmax(per_file[train].sum(axis=0)))])
                for key, (ths, per_file) in table.items()
            ),
            key=lambda b: b[0],
        )
        _, key, th = best
        ths, per_file = table[key]
        raw = float(per_file[~train, int(np.searchsorted(ths, th))].sum())
        total += raw
        folds.append({"category": cat, "chosen": key, "threshold": float(th), "raw": raw})
    null = sum(fs.null_score for fs in scorers)
    perfect = sum(fs.perfect_score for fs in scorers)
    return {"score": normalised(total, null, perfect), "folds": folds}


def nab_grid(detector: str) -> list[dict]:
    """The parameter sets a detector's tuning on NAB chose among (its class's `nab_grid`), as
    the cross-validation's candidates; [{}] (its defaults alone) when it declares none."""
    import itertools

    grid = getattr(detectors.REGISTRY[detector], "nab_grid", None) or {}
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
