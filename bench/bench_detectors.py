"""Every registered detector on one table, beside the original program's two algorithms:
`python -m bench.bench_detectors` (part of `make bench`).

One process, one core, the same data for all:
- **NAB**: the 29 NAB development series in data/nab, replayed reading by reading through a fresh
  detector with its defaults (what `python -m workers.evaluate --detector NAME` runs); NAB's
  standard, low-false-positive and low-false-negative profiles, each with its best single
  threshold over the 29, as NAB's scorer picks it (lib.detect.nab_score).
- **CV**: leave one NAB category out: the threshold, and for a detector with a tuning grid
  (`nab_grid`: novelty) its parameters too, chosen on the other categories and the left-out one
  scored with them; summed and normalised over the 29. A big gap to the plain figure is overfitting.
- **realistic, held out**: data/scenarios/realistic-heldout.toml (three simulated hours that no
  one tuned on): the share of normal readings flagged at the detector's default decision, and
  per injected kind the share caught (spike, dip, level shift, drift, flatline, noise burst,
  dropout: the last is only the no-data rule's to catch). The first rows are the configured set
  (vigie.toml: its detectors, rules and [events] min_agree) as the worker decides.
- **readings/s**: readings scored and learnt per second of one core on that scenario, fed in
  batches of 100 readings per sensor as the worker gets them from a poll; beside the original
  program's way on a slice of the same data: scikit-learn's DBSCAN fitted on the FIFO of 21 for
  every reading, and 100 isolation trees refitted on it for every reading.
`python -m workers.evaluate --set` prints the realistic table in full (both scenarios, delays).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from lib.config import PROJECT_ROOT, load_config
from lib.detect import detectors
from lib.detect.detectors.base import Detector
from lib.detect.detectors.window import Window, robust_scale
from lib.detect.evaluation import (
    SET_KINDS,
    SET_SCENARIOS,
    cross_validate,
    evaluate_set,
    format_set_report,
    generate_stream,
    load_nab,
    nab_grid,
    nab_profiles,
    nab_scores,
)
from lib.ingest.simulator import load_scenario

KIND_SHORT = {
    "spike": "spk",
    "dip": "dip",
    "level_shift": "lvl",
    "drift": "drf",
    "flatline": "flt",
    "noise": "noi",
    "dropout": "drp",
}


class SeedIsolationForest(Detector):
    """The original program's way: 100 trees refitted on its FIFO (the previous 20 readings and
    the new one) for every reading."""

    name = "seed-iforest"

    def __init__(self, window: int = 20):
        self.warmup, self.seen, self._w = window, 0, Window(window)

    def score_one(self, x):
        from sklearn.ensemble import IsolationForest

        m = IsolationForest(n_estimators=100, random_state=0).fit(np.append(self._w.values(), x).reshape(-1, 1))
        return float(-m.score_samples(np.array([[x]]))[0])

    def learn_one(self, x):
        self._w.push(x)
        self.seen += 1


class SeedDBSCAN(Detector):
    """The original program's way: scikit-learn's DBSCAN fitted on the 21 readings for every reading."""

    name = "seed-dbscan"

    def __init__(self, window: int = 20, eps: float = 1.0, min_samples: int = 4):
        self.warmup, self.seen, self._w = window, 0, Window(window)
        self.eps, self.min_samples = eps, min_samples

    def score_one(self, x):
        from sklearn.cluster import DBSCAN

        v = np.append(self._w.values(), x)
        c, s = robust_scale(v[:-1])
        labels = DBSCAN(eps=self.eps, min_samples=self.min_samples).fit(((v - c) / s).reshape(-1, 1)).labels_
        return 1.0 if labels[-1] == -1 else 0.0

    def learn_one(self, x):
        self._w.push(x)
        self.seen += 1


def readings_per_s(make, per_sensor: list[np.ndarray], batch: int = 100, limit: int | None = None) -> float:
    """Readings scored and learnt per CPU second, sensor by sensor in batches of `batch`."""
    spent = 0.0
    n = 0
    for values in per_sensor:
        values = values[:limit] if limit else values
        det = make()
        t0 = time.process_time()
        for start in range(0, len(values), batch):
            det.score_learn_many([float(v) for v in values[start : start + batch]])
        spent += time.process_time() - t0
        n += len(values)
    return n / spent if spent else float("nan")


def realistic_rows(config, stream) -> dict[str, dict]:
    result = evaluate_set(config, stream)
    return {r["row"]: r for r in result["rows"]}, result


def fmt_kinds(row: dict) -> str:
    return " ".join(f"{100 * row['kinds'][k]['recall']:3.0f}" if row["kinds"][k]["n"] else "  -" for k in SET_KINDS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", nargs="*", default=None, help="registry names (default: all)")
    ap.add_argument("--seconds", type=float, default=10800.0, help="simulated seconds of the realistic scenario")
    ap.add_argument("--no-seed", action="store_true", help="skip the original program's way (slow)")
    ap.add_argument("--no-cv-grid", action="store_true", help="cross-validate the threshold only")
    ap.add_argument("--set-only", action="store_true", help="print the realistic set tables only")
    args = ap.parse_args(argv)
    config = load_config()
    t_start = time.process_time()
    _, path, seed = dict((n, (n, p, s)) for n, p, s in SET_SCENARIOS)["held-out"]
    stream = generate_stream(load_scenario(PROJECT_ROOT / path), args.seconds, seed, name="held-out")
    rows, result = realistic_rows(config, stream)
    if args.set_only:
        print(format_set_report([result], {"held-out": "held out: no one tunes on it"}))
        return 0
    series = load_nab(PROJECT_ROOT / "data" / "nab", PROJECT_ROOT / "data" / "nab" / "windows.json")
    per_sensor = [stream.value[stream.of(s)] for s in stream.sensors]
    names = args.detectors or list(detectors.REGISTRY)

    table = []
    for name in names:
        scores = nab_scores(series, name)
        prof = nab_profiles(series, scores)
        grid = [] if args.no_cv_grid else nab_grid(name)
        candidates = {"defaults": scores}
        for params in grid:
            if params:
                candidates[str(params)] = nab_scores(series, name, params)
        cv = cross_validate(series, candidates)
        rate = readings_per_s(lambda: detectors.build(name)[0], per_sensor)
        table.append((name, prof, cv["score"], len(candidates) > 1, rows.get(name), rate))
        print(f"  {name}: done ({time.process_time() - t_start:.0f} s of CPU so far)", file=sys.stderr, flush=True)
    seeds = {}
    if not args.no_seed:
        for label, make, limit in (("seed-dbscan", SeedDBSCAN, 400), ("seed-iforest", SeedIsolationForest, 60)):
            seeds[label] = readings_per_s(make, per_sensor, limit=limit)

    members = "+".join(config.detection.detectors)
    print(
        f"NAB: the 29 development series in data/nab (54 windows); CV: leave one category out; realistic: "
        f"{stream.name} scenario ({len(stream.t):,} readings, {stream.seconds / 3600:.0f} simulated hours, "
        f"{', '.join(stream.sensors)}), kinds {' '.join(KIND_SHORT[k] for k in SET_KINDS)} (% caught)"
    )
    head = (
        f"{'detector':12s} {'NAB std':>7s} {'low FP':>6s} {'low FN':>6s} {'CV':>6s}  {'false al.':>9s}  "
        f"{' '.join(f'{KIND_SHORT[k]:>3s}' for k in SET_KINDS)}  {'readings/s':>10s} {'x orig.':>7s}"
    )
    print(head)
    for label in ("set", "rules"):
        if label in rows:
            r = rows[label]
            what = "default set" if label == "set" else "  its rules"
            print(
                f"{what:12s} {'':>7s} {'':>6s} {'':>6s} {'':>6s}  {100 * r['false_alarm_rate']:8.2f}%  {fmt_kinds(r)}"
            )
    for name, prof, cv, grid, r, rate in table:
        ref = seeds.get("seed-dbscan" if name == "dbscan" else "seed-iforest")
        ratio = f"{rate / ref:7.0f}" if ref and name in ("dbscan", "iforest") else f"{'':>7s}"
        fa = f"{100 * r['false_alarm_rate']:8.2f}%" if r else f"{'-':>9s}"
        kinds = fmt_kinds(r) if r else ""
        print(
            f"{name:12s} {prof['standard']['score']:7.1f} {prof['reward_low_FP_rate']['score']:6.1f} "
            f"{prof['reward_low_FN_rate']['score']:6.1f} {cv:5.1f}{'*' if grid else ' '}  {fa}  {kinds:27s}  "
            f"{rate:10,.0f} {ratio}"
        )
    for label, rate in seeds.items():
        print(f"{label:12s} {'':>7s} {'':>6s} {'':>6s} {'':>6s}  {'':>9s}  {'':27s}  {rate:10,.0f}")
    print(
        f"default set: {members} and the rules of [detection.rules] (any member flagging a reading flags it), "
        f"as the worker decides; false al.: share of normal readings flagged."
    )
    print(
        "CV*: parameters (the detector's tuning grid) and threshold chosen without the left-out category; "
        "otherwise the threshold alone. x orig.: readings/s over the original program's way (dbscan, iforest)."
    )
    print(f"(one run, {time.process_time() - t_start:.0f} s of CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
