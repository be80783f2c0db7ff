"""Evaluate detectors on labelled data: `python -m workers.evaluate ...`.

NAB-format folders (the default: the ten tuning series in data/nab):
    python -m workers.evaluate --detector likelihood --out results/
    python -m workers.evaluate --data data/nab --windows data/nab/windows.json --detector zscore dbscan
A recorded session against the simulator's injected truth (the `truth` table):
    python -m workers.evaluate --session latest --detector likelihood iforest

Writes NAB's results format under --out (`<category>/<detector>_<name>.csv`), and with windows
prints per-file and overall precision / recall / F1 of detected windows and the NAB-style score.
"""
from __future__ import annotations

import argparse
import json
import sys

from lib.config import PROJECT_ROOT, ConfigError, load_config
from lib.detect.detectors import REGISTRY, check_params
from lib.detect.evaluation import evaluate, format_report, load_nab, session_series


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", nargs="+", default=["likelihood"],
                    help=f"registered detector name(s): {', '.join(REGISTRY)}")
    ap.add_argument("--params", default="{}",
                    help='JSON parameters for the detector(s), e.g. \'{"window": 50}\'')
    ap.add_argument("--data", default=str(PROJECT_ROOT / "data" / "nab"),
                    help="folder of <category>/<name>.csv files (timestamp,value)")
    ap.add_argument("--windows", default=None,
                    help="NAB combined_windows.json-format file (default: <data>/windows.json if present)")
    ap.add_argument("--session", default=None,
                    help='evaluate a recorded session against the simulator truth ("latest" or a session id)')
    ap.add_argument("--threshold", type=float, default=None,
                    help="score threshold (default: the best single threshold over all files, as NAB does)")
    ap.add_argument("--out", default=None, help="folder for NAB-format results files")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
        for name in args.detector:
            check_params(name, params)
        if args.session:
            series = session_series(load_config().db_path, None if args.session == "latest" else args.session)
        else:
            from pathlib import Path
            windows = args.windows or (str(Path(args.data) / "windows.json")
                                       if (Path(args.data) / "windows.json").exists() else None)
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
