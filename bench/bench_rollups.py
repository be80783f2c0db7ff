"""What keeping the long-span tables costs the store: `python -m bench.bench_rollups [--stored 5000000]`.

Times the store's write (`lib.store.writer.Writer.write`: one transaction) of batches of 18, 900
and 18,000 readings with two detectors' states each (one reading in 500 flagged), into a file that
already holds `--stored` readings, with and without the statements that keep `readings_1m` and
`flags` (lib/store/rollups.py), the two files written in turn. Median wall time per write, in
milliseconds, over `--repeat` writes after two warm-up ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from lib.store import writer
from lib.store.batch import Batch
from lib.store.schema import init_db

SIZES = (18, 900, 18_000)


def make_batch(first_seq: int, n: int, t0_us: int, flag_every: int = 500) -> Batch:
    batch = Batch()
    for seq in range(first_seq, first_seq + n):
        sensor, ts = f"sensor{seq % 20:02d}", t0_us + seq * 1000
        batch.readings[("bench", seq)] = (sensor, ts, float(seq % 97))
        for detector in ("dbscan", "iforest"):
            flagged = seq % flag_every == 0
            batch.states[("bench", seq, detector)] = (
                sensor,
                ts,
                "anomaly" if flagged else "normal",
                0.9 if flagged else 0.1,
            )
    return batch


def filled(path: Path, stored: int, t0: int) -> None:
    init_db(path)
    conn = duckdb.connect(str(path))
    conn.execute(f"""INSERT INTO readings SELECT 'old', i, 'sensor' || lpad((i % 20)::VARCHAR, 2, '0'),
                     make_timestamp({t0} + i * 1000), i % 97 FROM range({stored}) t(i)""")
    conn.close()


def run(stored: int, repeat: int) -> dict[bool, dict[int, float]]:
    """{with the derived tables: {batch size: median ms}}: the two files are written in turn, one
    write each, so that a busy machine slows both alike."""
    plain = [(w, w.statements(), w.new_rows()) for w in (replace(w, derived=None) for w in writer.WRITES)]
    full = [(w, w.statements(), w.new_rows()) for w in writer.WRITES]
    saved = list(writer._STATEMENTS)
    times: dict[bool, dict[int, list[float]]] = {True: {}, False: {}}
    with tempfile.TemporaryDirectory(prefix="vigie-bench-") as tmp:
        t0 = int(datetime.now(timezone.utc).timestamp() * 1e6) - 2 * stored * 1000
        writers = {}
        for derived in (False, True):
            path = Path(tmp) / f"{derived}.duckdb"
            filled(path, stored, t0)
            writers[derived] = writer.Writer(path)
        try:
            seq = stored
            for size in SIZES:
                for k in range(repeat + 2):
                    batch = make_batch(seq, size, t0)
                    seq += size
                    for derived in (False, True) if k % 2 else (True, False):  # either may go first
                        writer._STATEMENTS[:] = full if derived else plain
                        start = time.perf_counter()
                        writers[derived].write(batch)
                        if k >= 2:  # two warm-up writes
                            times[derived].setdefault(size, []).append((time.perf_counter() - start) * 1000)
        finally:
            writer._STATEMENTS[:] = saved
            for w in writers.values():
                w.close()
    return {d: {size: statistics.median(ts) for size, ts in by.items()} for d, by in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stored", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=25)
    args = ap.parse_args(argv)
    found = run(args.stored, args.repeat)
    without, with_them = found[False], found[True]
    print(f"store write into {args.stored:,} stored readings, median of {args.repeat} writes (ms)")
    print(f"{'readings':>9} {'without':>8} {'with':>8} {'added':>8}")
    for size in SIZES:
        print(f"{size:>9,} {without[size]:>8.1f} {with_them[size]:>8.1f} {with_them[size] - without[size]:>8.1f}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
