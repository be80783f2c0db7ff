"""Chart query time against stored size: `python -m bench.bench_queries [--sizes 100000,1000000,10000000]`.

Generates readings straight into a DuckDB file in a temporary folder with SQL (`range()`), with the
store's schema (primary keys included), 20 sensors at 100 readings/s in all ending now (or spread
evenly over the last `--days`), and two detectors' states for every reading (about 0.1 % flagged);
the per-minute rollups and flagged readings are added by the store's own statements
(lib.store.rollups). At each size it times what the Live view asks per sensor chart
(`lib.page.queries.chart_data`: the line thinned to 600 buckets and the flagged readings) over
four spans, on an open read-only connection as one Live refresh uses it; opening that connection
(once per refresh, whatever the number of charts) is timed on its own. Spans of a minute or more
per bucket read the rollups ("rollups" in the table), shorter ones the readings ("readings"); for
the former the same chart from the readings and states ("readings p50", as before the rollups, 3
runs) is timed too. The skeleton's way (every reading and state of the span) is timed for comparison. Wall-clock p50/p95
over `--repeat` runs, and the process's CPU time per query (both threads), in milliseconds: on a
shared, busy machine the wall time includes waiting for a core, the CPU time does not.

The operator page's target, a 30-day chart over 100 million readings under 200 ms (p95):
`python -m bench.bench_queries --sizes 100000000 --days 30` (about 6 GB of temporary disk; it
takes minutes to generate, so it is not part of `make bench`'s default sizes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from lib.page import queries
from lib.store import rollups
from lib.store.reader import read_db
from lib.store.schema import apply_migrations

SENSORS = 20
STEP_US = 10_000  # 100 readings/s in all, 5/s per sensor (unless --days spreads them)
SPANS = {"5 min": 5, "1 h": 60, "24 h": 1440, "30 d": 43200}
CHUNK = 10_000_000  # readings generated per transaction


def grow(path: Path, start: int, stop: int, end_us: int, total: int, step_us: int = STEP_US) -> None:
    """Add readings start..stop-1, their states, rollups and flags; reading `total - 1` lands at
    `end_us`, one every `step_us`."""
    conn = duckdb.connect(str(path))
    try:
        for lo in range(start, stop, CHUNK):
            hi = min(stop, lo + CHUNK)
            conn.execute("BEGIN")
            conn.execute(f"""
                INSERT INTO readings
                SELECT 'bench-' || (i // 1000000), i, 'sensor' || lpad((i % {SENSORS})::VARCHAR, 2, '0'),
                       make_timestamp({end_us} - ({total} - 1 - i) * {step_us}),
                       50 + 10 * sin(i / 50000.0) + (hash(i) % 100) / 50.0 + CASE WHEN i % 997 = 0 THEN 40 ELSE 0 END
                FROM range({lo}, {hi}) t(i)""")
            # one statement per detector, each straight from range(): in time order, as the store
            # writes them (a join with the readings, sorted, took most of the generation's time)
            for detector, every in (("dbscan", 1499), ("iforest", 2003)):
                conn.execute(f"""
                    INSERT INTO states
                    SELECT 'bench-' || (i // 1000000), i, 'sensor' || lpad((i % {SENSORS})::VARCHAR, 2, '0'),
                           make_timestamp({end_us} - ({total} - 1 - i) * {step_us}), '{detector}',
                           CASE WHEN i % 1000000 < 20 THEN 'initializing'
                                WHEN i % {every} = 0 OR i % 997 = 0 THEN 'anomaly' ELSE 'normal' END,
                           CASE WHEN i % 1000000 < 20 THEN NULL ELSE (hash(i) % 1000) / 1000.0 END
                    FROM range({lo}, {hi}) t(i)""")
            # the store's own statements, on this chunk's rows
            rollups.add_readings(conn, f"SELECT * FROM readings WHERE seq >= {lo} AND seq < {hi}")
            rollups.add_states(conn, f"SELECT * FROM states WHERE seq >= {lo} AND seq < {hi}")
            conn.execute("COMMIT")
    finally:
        conn.close()


def _count(path: Path) -> int:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    except duckdb.Error:
        return -1
    finally:
        conn.close()


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """Wall-clock p50 and p95, and median CPU time, in ms."""
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    times.sort()
    return (
        statistics.median(times),
        times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))],
        statistics.median(cpu),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000", help="stored readings, comma-separated")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument(
        "--naive-max",
        type=int,
        default=1_000_000,
        help="skip the skeleton's way above this many stored readings (it fetches everything)",
    )
    ap.add_argument(
        "--days",
        type=float,
        default=0.0,
        help="spread the largest size evenly over this many days ending now (0: 100 readings/s)",
    )
    ap.add_argument(
        "--file",
        type=Path,
        default=None,
        help="generate into this file and keep it; a file already holding the largest size is "
        "measured again as it is (its readings end when it was made)",
    )
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    total = sizes[-1]
    step_us = int(args.days * 86400e6 / total) if args.days else STEP_US
    end = queries.utc_now()
    end_us = int((end - datetime(1970, 1, 1)).total_seconds() * 1e6)
    print(
        f"{SENSORS} sensors, {1e6 / step_us:,.1f} readings/s in all ending now "
        f"({total * step_us / 86400e6:,.1f} days at the largest size), 2 detectors' states per reading; "
        f"one sensor's chart; {args.repeat} runs each"
    )
    print(
        f"{'stored readings':>15} {'file MB':>8} {'span':>6} {'source':>8} {'rows drawn':>10} {'marks':>6} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'CPU ms':>7} {'naive p50':>10} {'naive p95':>10} "
        f"{'readings p50':>12} {'CPU ms':>7}"
    )
    worst_p95 = 0.0
    with tempfile.TemporaryDirectory(prefix="vigie-bench-") as tmp:
        path = args.file or Path(tmp) / "vigie.duckdb"
        kept = path.exists() and _count(path) == total
        if kept:
            sizes = [total]
            conn = duckdb.connect(str(path), read_only=True)
            end = conn.execute("SELECT max(ts) FROM readings").fetchone()[0]
            conn.close()
            print(f"measuring {path} as it is (readings up to {end:%Y-%m-%d %H:%M} UTC)")
        else:
            if path.exists():
                path.unlink()
            conn = duckdb.connect(str(path))
            apply_migrations(conn)
            conn.close()
        have = total if kept else 0
        for size in sizes:
            # readings are numbered so that the newest always ends now, whatever the final size
            if size > have:
                t0 = time.perf_counter()
                grow(path, total - size, total - have, end_us, total, step_us)
                print(f"{size - have:,} readings generated in {time.perf_counter() - t0:.0f} s", flush=True)
            have = size
            mb = path.stat().st_size / 1e6

            def connect():
                with read_db(path):
                    pass

            c50, c95, ccpu = timed(connect, args.repeat)
            print(f"{size:>15,} {mb:>8.0f} {'open a read-only connection':>34} {c50:>14.1f} {c95:>7.1f} {ccpu:>7.1f}")
            sensor = "sensor07"
            for label, minutes in SPANS.items():
                since = end - timedelta(minutes=minutes)

                with read_db(path) as c:
                    line, marks = queries.chart_data(c, sensor, since, end)
                    p50, p95, cpu = timed(lambda: queries.chart_data(c, sensor, since, end), args.repeat)
                    n50 = n95 = r50 = rcpu = float("nan")
                    if size <= args.naive_max:
                        n50, n95, _ = timed(
                            lambda: (
                                queries.recent_readings(c, sensor, since),
                                queries.recent_states(c, sensor, since),
                            ),
                            max(3, args.repeat // 4),
                        )
                    source = "rollups" if minutes * 60 / 600 >= queries.ROLLUP_BUCKET_S else "readings"
                    if source == "rollups":  # the same chart from the readings, as before the rollups
                        r50, _, rcpu = timed(lambda: queries.charts_fetch_readings(c, (sensor,), since, end), 3)
                worst_p95 = max(worst_p95, p95)
                print(
                    f"{size:>15,} {mb:>8.0f} {label:>6} {source:>8} {len(line):>10,} {len(marks):>6} "
                    f"{p50:>7.1f} {p95:>7.1f} {cpu:>7.1f} {n50:>10.1f} {n95:>10.1f} {r50:>12.1f} {rcpu:>7.1f}",
                    flush=True,
                )
    load = os.getloadavg()[0]
    print(
        f"worst chart query p95: {worst_p95:.1f} ms (targets: under 100 ms with 10 million readings stored, "
        f"a 30-day chart under 200 ms with 100 million); load average {load:.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
