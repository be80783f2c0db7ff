"""Every registered detector, beside the original program's two algorithms (docs/origins.md, where
benchmark rows call it "the seed"): `python -m bench.bench_detectors`.

One run, one process, one core, the same data for all:
- **NAB**: the ten NAB series shipped in data/nab (the tuning set), replayed reading by reading;
  the NAB-style score (standard profile, one threshold per detector over the ten files) and the
  F1 of detected windows at that threshold.
- **sim**: a simulator scenario with every anomaly kind (spike, dip, level_shift, drift,
  flatline, noise, dropout, malformed), generated in-process with `lib.ingest.simulator.SignalModel`
  (two sensors on different scales). Dropouts and malformed lines leave no reading to score:
  they are the no-data rule's and the producer's rejects' business, so only the value-changing
  kinds are windows here. Same scores: NAB-style and F1.
- **readings/s**: readings scored and learnt per second of one core on the sim data, fed in
  batches of `--batch` readings per sensor as the detector worker gets them from a poll.

- **the configured set, as an operator lives with it**: `[detection]` of vigie.toml (its
  detectors, thresholds and rules, `[events] min_agree`) and every registered detector alone,
  over three simulated hours of each realistic scenario (data/scenarios/realistic-tune.toml, on
  which settings may be tuned, and realistic-heldout.toml, held out): the share of normal readings
  flagged, and per injected kind the recall and the detection delay. The same table as
  `python -m workers.evaluate --set` (lib.detect.evaluation).

The original program's way runs on the sim data only (refitting per reading is far too slow for
66,000 NAB readings): `seed-iforest` refits 100 trees on the FIFO of 21 (the previous 20 readings
and the new one) for every reading and scores the new one; `seed-dbscan` fits scikit-learn's
DBSCAN on the 21 readings (in the same robust units) for every reading, and says 1 when the new
one is noise. `iforest` (the default,
draws a fresh forest for every reading as the original program does, path by path.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from lib.detect import detectors
from lib.detect.detectors.base import Detector
from lib.detect.detectors.window import Window, robust_scale
from lib.detect.evaluation import Series, evaluate, load_nab, simulated_series
from lib.config import PROJECT_ROOT
from lib.detect.nab_score import FileScorer, corpus_score
from lib.detect.evaluation import window_metrics


def sim_scenario(anomalies: bool = True):
    from lib.ingest.simulator import scenario_from_dict
    kinds = {  # kind: (duration_s, magnitude in noise units)
        "spike": (0, 12), "dip": (0, 12), "level_shift": (6, 8), "drift": (8, 15),
        "flatline": (6, 0), "noise": (4, 6), "dropout": (3, 0), "malformed": (0, 0),
    }
    return scenario_from_dict({
        "sensors": {
            "humidite": {"base": 55.0, "amplitude": 6.0, "period_s": 120, "noise": 0.3},
            "pression": {"base": 1013.0, "amplitude": 0.8, "period_s": 120, "noise": 0.05, "decimals": 3},
        },
        "anomalies": [{"kind": k, "sensor": "*", "every_s": 40, "duration_s": d, "magnitude": m}
                      for k, (d, m) in kinds.items()] if anomalies else [],
    })


WARM_S = 70.0
VALUE_KINDS = ("spike", "dip", "level_shift", "drift", "flatline", "noise")


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
    """The original program's way: scikit-learn's DBSCAN fitted on the 21 readings, every reading."""
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


def run_on(make, series: list[Series], batch: int, warm: list[Series] | None = None):
    """Scores per series from fresh detectors (first fed the matching `warm` series, untimed, as a
    restarted worker feeds history), the CPU seconds spent scoring, readings scored."""
    out, spent, n = [], 0.0, 0
    for k, s in enumerate(series):
        det = make()
        if warm is not None:
            det.learn_many([float(v) for v in warm[k].values])
        scores = np.zeros(len(s.values))
        t0 = time.process_time()
        for start in range(0, len(s.values), batch):
            part = det.score_learn_many([float(v) for v in s.values[start:start + batch]])
            scores[start:start + len(part)] = [sc if ready else 0.0 for ready, sc in part]
        spent += time.process_time() - t0
        n += len(s.values)
        out.append(scores)
    return out, spent, n


def scores_of(series, all_scores):
    nab = corpus_score([(FileScorer(s.name, len(s.values), s.windows), sc) for s, sc in zip(series, all_scores)])
    flagged = detected = windows = false = 0
    for s, sc in zip(series, all_scores):
        m = window_metrics(s, sc, nab["threshold"])
        flagged += m["flagged"]
        detected += m["detected"]
        windows += m["windows"]
        false += m["false_rows"]
    p = (flagged - false) / flagged if flagged else 0.0
    r = detected / windows if windows else 1.0
    return nab["score"], (2 * p * r / (p + r) if p + r else 0.0), detected, windows


def set_table(seconds: float) -> None:
    """The configured detector set over the realistic scenarios (see the module doc)."""
    from lib.config import load_config
    from lib.detect.evaluation import SET_SCENARIOS, evaluate_set, format_set_report, generate_stream
    from lib.ingest.simulator import load_scenario
    config = load_config()
    t0 = time.process_time()
    results = [evaluate_set(config, generate_stream(load_scenario(PROJECT_ROOT / path), seconds, seed, name=name))
               for name, path, seed in SET_SCENARIOS]
    print(format_set_report(results, {"tune": "settings may be tuned here", "held-out": "held out: no one tunes on it"}))
    print(f"(the set table: {time.process_time() - t0:.0f} s of CPU; `python -m workers.evaluate --set` prints it too)\n",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim-seconds", type=float, default=120.0, help="simulated seconds (5 readings/s per sensor)")
    ap.add_argument("--batch", type=int, default=100, help="readings per sensor per detector call")
    ap.add_argument("--no-nab", action="store_true", help="skip the ten NAB series")
    ap.add_argument("--no-seed", action="store_true", help="skip the original program's way (slow: ~0.05-0.15 s a reading)")
    ap.add_argument("--detectors", nargs="*", default=None, help="registry names (default: all)")
    ap.add_argument("--no-set", action="store_true", help="skip the configured set on the realistic scenarios")
    ap.add_argument("--set-seconds", type=float, default=10800.0,
                    help="simulated seconds of each realistic scenario for the set table")
    ap.add_argument("--only-set", action="store_true", help="print the set table only")
    args = ap.parse_args(argv)
    if not args.no_set:
        set_table(args.set_seconds)
    if args.only_set:
        return 0

    # a quiet stretch first, long enough for every detector's warm-up (likelihood: 300 readings),
    # fed as history; then the scored stretch with the anomalies
    warm = simulated_series(sim_scenario(anomalies=False), WARM_S, rate_per_sensor=5.0, seed=6)
    sim = simulated_series(sim_scenario(), args.sim_seconds, rate_per_sensor=5.0, seed=7, kinds=VALUE_KINDS,
                           t0=WARM_S)
    nab = None if args.no_nab else load_nab(PROJECT_ROOT / "data" / "nab", PROJECT_ROOT / "data" / "nab" / "windows.json")
    names = args.detectors or list(detectors.REGISTRY)
    rows = []
    if not args.no_seed:
        for label, make in (("seed-dbscan", SeedDBSCAN), ("seed-iforest", SeedIsolationForest)):
            sc, spent, n = run_on(make, sim, args.batch, warm)
            rows.append((label, None, None, *scores_of(sim, sc), n / spent))
            print(f"  {label}: done", file=sys.stderr, flush=True)
    variants = [(n, {}) for n in names]
    for name, params in variants:
        label = name
        make = lambda: detectors.build(name, params)[0]  # noqa: E731
        sc, spent, n = run_on(make, sim, args.batch, warm)
        sim_nab, sim_f1, found, wins = scores_of(sim, sc)
        nab_score = nab_f1 = None
        if nab is not None and not params:
            r = evaluate(nab, name, params)
            nab_score, nab_f1 = r["nab_score"], r["overall"]["f1"]
        rows.append((label, nab_score, nab_f1, sim_nab, sim_f1, found, wins, n / spent))
        print(f"  {label}: done", file=sys.stderr, flush=True)

    seed_rate = {r[0]: r[-1] for r in rows if r[0].startswith("seed-")}
    print(f"sim: {sum(len(s.values) for s in sim)} readings, {sum(len(s.windows) for s in sim)} windows injected "
          f"({', '.join(VALUE_KINDS)}); NAB: ten series, 19 windows; one core, batches of {args.batch}")
    print(f"{'detector':16s} {'NAB score':>9s} {'NAB F1':>7s} {'sim NAB':>8s} {'sim F1':>7s} {'found':>7s} "
          f"{'readings/s':>11s} {'x seed':>8s}")
    for label, nab_score, nab_f1, sim_nab, sim_f1, found, wins, rate in rows:
        base = seed_rate.get("seed-dbscan" if label.startswith("dbscan") else "seed-iforest")
        ratio = f"{rate / base:8.0f}" if base and not label.startswith("seed-") else f"{'':8s}"
        fmt = lambda v, w, p: f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}s}"  # noqa: E731
        print(f"{label:16s} {fmt(nab_score, 9, 1)} {fmt(nab_f1, 7, 3)} {sim_nab:8.1f} {sim_f1:7.3f} "
              f"{found:3d}/{wins:<3d} {rate:11.0f} {ratio}")
    print("x seed: readings/s over seed-dbscan's for dbscan, over seed-iforest's for the others.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
