"""`make bench`: run every `bench/bench_*.py` script's `main()` in turn, printing its tables.

Each script compares Vigie's way with the original program's way (docs/origins.md; its rows are
called "seed") on the same input in the same run, so the ratios hold even on a noisy machine.
`python -m bench.run_all NAME...` runs only those scripts.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main(argv=None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    failed = []
    for name in names:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            rc = importlib.import_module(f"bench.{name}").main([])
        except Exception as exc:  # one broken benchmark should not hide the others' figures
            print(f"{name} failed: {exc!r}")
            rc = 1
        if rc:
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
