"""Evaluate detectors on labelled data: `python -m workers.evaluate ...`.

NAB-format folders (the default: the series in data/nab):
    python -m workers.evaluate --detector novelty --out results/
    python -m workers.evaluate --data data/nab --windows data/nab/windows.json --detector zscore dbscan
A recorded session against the simulator's injected truth (the `truth` table):
    python -m workers.evaluate --session latest --detector novelty iforest
The configured detector set as an operator lives with it (lib.detect.evaluation, "a detector set"):
    python -m workers.evaluate --set
    VIGIE_DETECTION_RULES='{"*": {"no_data_s": 2}}' python -m workers.evaluate --set --detector likelihood
  runs `[detection]` (detectors, their [detection.params] thresholds, [detection.rules]) and
  `[events] min_agree` from vigie.toml (VIGIE_* overrides and VIGIE_CONFIG apply, as for the
  workers) over the realistic scenarios: data/scenarios/realistic-tune.toml (settings may be tuned
  on it) and data/scenarios/realistic-heldout.toml (held out: measure there, never tune), and
  prints the share of normal readings flagged and, per injected kind, recall and detection delay,
  for the set, each member, and every other registered detector alone.

NAB mode writes NAB's results format under --out (`<category>/<detector>_<name>.csv`), and with
windows prints per-file and overall precision / recall / F1 of detected windows and the NAB-style score.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lib.config import PROJECT_ROOT, ConfigError, load_config
from lib.detect.detectors import REGISTRY, check_params
from lib.detect.evaluation import (
    SET_SCENARIOS,
    evaluate,
    evaluate_set,
    format_report,
    format_set_report,
    generate_stream,
    load_nab,
    session_series,
)


def set_main(args) -> int:
    from lib.detect.detection import check_detection_config
    from lib.ingest.simulator import ScenarioError, load_scenario

    try:
        config = load_config()
        if args.detector:
            config = dataclasses.replace(
                config, detection=dataclasses.replace(config.detection, detectors=tuple(args.detector))
            )
        check_detection_config(config)
        if args.scenario:
            chosen = [(Path(p).stem, p, args.seed) for p in args.scenario]
        else:
            chosen = list(SET_SCENARIOS)
        scenarios = [(name, load_scenario(config.resolve(path)), seed) for name, path, seed in chosen]
    except (ConfigError, ScenarioError, ValueError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    results = []
    for name, scenario, seed in scenarios:
        stream = generate_stream(scenario, args.seconds, seed, name=name)
        results.append(evaluate_set(config, stream, singles=not args.no_singles, tolerance=args.tolerance))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        roles = {"tune": "settings may be tuned here", "held-out": "held out: no one tunes on it"}
        print(format_set_report(results, roles))
    return 0


def labels_main(args) -> int:
    from lib.detect.evaluation import format_labelled_replay, labelled_replay, latest_session, session_rejections

    try:
        if not args.session:
            raise ValueError("--labels replays a recorded session: give --session latest or a session id")
        config = load_config()
        session = latest_session(config.db_path) if args.session == "latest" else args.session
        marked = session_rejections(config.db_path, session)
    except (ValueError, ConfigError, OSError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    if not marked:
        print(f"session {session}: no rejected flag to replay")
        return 0
    results = {
        sensor: labelled_replay(config, sensor, values, rejected) for sensor, (values, rejected) in marked.items()
    }
    print(json.dumps(results, indent=1) if args.json else format_labelled_replay(results))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m workers.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--detector",
        nargs="+",
        default=None,
        help=f"registered detector name(s): {', '.join(REGISTRY)} (default: novelty, the strongest on NAB; "
        "with --set, the set's members instead of [detection] detectors)",
    )
    ap.add_argument("--params", default="{}", help="JSON parameters for the detector(s), e.g. '{\"window\": 50}'")
    ap.add_argument(
        "--data",
        default=str(PROJECT_ROOT / "data" / "nab"),
        help="folder of <category>/<name>.csv files (timestamp,value)",
    )
    ap.add_argument(
        "--windows",
        default=None,
        help="NAB combined_windows.json-format file (default: <data>/windows.json if present)",
    )
    ap.add_argument(
        "--session",
        default=None,
        help='evaluate a recorded session against the simulator truth ("latest" or a session id)',
    )
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score threshold (default: the best single threshold over all files, as NAB does)",
    )
    ap.add_argument("--out", default=None, help="folder for NAB-format results files")
    ap.add_argument(
        "--set", action="store_true", help="evaluate the configured detector set on the realistic scenarios (see above)"
    )
    ap.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="with --set: a scenario file instead of the two realistic ones (repeatable)",
    )
    ap.add_argument("--seed", type=int, default=1, help="with --set --scenario: the simulator's seed")
    ap.add_argument(
        "--seconds",
        type=float,
        default=10800.0,
        help="with --set: seconds of each scenario's clock to play (default: 3 hours)",
    )
    ap.add_argument(
        "--tolerance",
        type=int,
        default=3,
        help="with --set: readings after an injection's last one where a flag still catches it",
    )
    ap.add_argument(
        "--no-singles", action="store_true", help="with --set: skip the rows of registered detectors outside the set"
    )
    ap.add_argument(
        "--labels",
        action="store_true",
        help="with --session: replay it through the configured detectors without and with the "
        "operator's rejected flags fed back, and print how many flags they remove",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if args.set:
        return set_main(args)
    if args.labels:
        return labels_main(args)
    args.detector = args.detector or ["novelty"]
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
        for name in args.detector:
            check_params(name, params)
        if args.session:
            series = session_series(load_config().db_path, None if args.session == "latest" else args.session)
        else:
            windows = args.windows or (
                str(Path(args.data) / "windows.json") if (Path(args.data) / "windows.json").exists() else None
            )
            series = load_nab(args.data, windows)
    except (ValueError, ConfigError, OSError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    results = []
    for name in args.detector:
        r = evaluate(series, name, params, threshold=args.threshold, out_dir=args.out, progress=True)
        results.append(r)
        if not args.json:
            print(format_report(r))
            print()
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
