"""Soak: the whole system under supervisord at 10 times a board's rate for `--minutes`, measuring
each program's resident memory, open file handles and threads, and chart freshness over time.

    nice python -m bench.soak --minutes 10          # the run behind docs/reliability.md (not in `make bench`)
    python -m bench.soak --minutes 1 --every 5      # a quick look

Chart freshness is what an operator sees: the age of the newest reading in DuckDB, read the way
the app reads it (a short read-only connection), sampled every `--every` seconds.

"Flat" is judged on the second half of the run, after start-up and warm-up: the least-squares
slope of each program's RSS (MB per minute), and the growth of file handles and threads from the
first to the last samples of that half. Exit code 1, with the reasons, if freshness p95 is over 2 s,
or handles or threads grow, or any RSS slope exceeds `--max-slope` MB/min, or a program restarted.
The page is kept open in headless chromium (if installed) so that the app works as for a viewer.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from tests.system import System, wait_for

PROGRAMS = ("producer", "detector", "store", "app", "simulator")
BOARD_RATE = 20.0  # lines/s of the demo board (vigie.toml [simulator] rate)


def scenario(n_sensors: int) -> str:
    lines = ["# soak: many sensors at 10x a board's rate"]
    for i in range(n_sensors):
        lines += [f"[sensors.s{i:02d}]", f"base = {20 + i}", "amplitude = 2.0", "period_s = 300", "noise = 0.2", ""]
    lines += ["[[anomalies]]", 'kind = "spike"', 'sensor = "*"', "every_s = 10", "magnitude = 15", ""]
    return "\n".join(lines)


def sample(system: System, pids: dict[str, int]) -> dict:
    row = {"t": time.monotonic()}
    for name in PROGRAMS:
        pid = system.pid(name)
        pids[name] = pid
        try:
            p = psutil.Process(pid)
            procs = [p, *p.children(recursive=True)]
            row[name] = (
                sum(q.memory_info().rss for q in procs) / 2**20,
                sum(q.num_fds() for q in procs),
                sum(q.num_threads() for q in procs),
                pid,
            )
        except (psutil.Error, ValueError):
            row[name] = None
    newest = (system.ask("newest") or {}).get("readings")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    row["fresh"] = (now - newest).total_seconds() if newest else None
    row["readings"] = system.count()
    return row


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10 * BOARD_RATE, help="lines/s in total (default: 10x a board)")
    ap.add_argument("--sensors", type=int, default=20)
    ap.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    ap.add_argument("--max-slope", type=float, default=1.0, help="RSS MB/min above which a program is not flat")
    ap.add_argument(
        "--no-browser",
        action="store_true",
        help="do not keep the page open in headless chromium (the app only queries for a viewer)",
    )
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="vigie-soak-"))
    (tmp / "soak.toml").write_text(scenario(args.sensors))
    env = {
        "VIGIE_SIMULATOR_SCENARIO": str(tmp / "soak.toml"),
        "VIGIE_SIMULATOR_RATE": str(args.rate),
        "VIGIE_LOG_LEVEL": "WARNING",
    }
    rows, pids = [], {}
    print(f"soak: {args.minutes:g} min at {args.rate:g} lines/s over {args.sensors} sensors; data in {tmp}", flush=True)
    with System(tmp, env) as system:
        wait_for(lambda: system.count("states") > 0, 300, what="the first states")
        viewer = None if args.no_browser else open_page(f"http://127.0.0.1:{system.app_port}/")
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        while time.monotonic() < end:
            row = sample(system, pids)
            rows.append(row)
            rss = "  ".join(f"{n} {row[n][0]:.0f}MB/{row[n][1]}fd/{row[n][2]}th" for n in PROGRAMS if row[n])
            print(
                f"{(row['t'] - t0) / 60:5.1f} min  readings {row['readings']:>8}  fresh "
                f"{row['fresh'] if row['fresh'] is None else round(row['fresh'], 2)} s  {rss}",
                flush=True,
            )
            time.sleep(max(0.0, args.every - (time.monotonic() - row["t"])))
        restarts = {n: len({r[n][3] for r in rows if r[n]}) - 1 for n in PROGRAMS}
        if viewer:
            viewer.close()
        rc_stop = system.stop()
    stored = rows[-1]["readings"]

    half = [r for r in rows if r["t"] - t0 >= (rows[-1]["t"] - t0) / 2]
    fresh = sorted(r["fresh"] for r in rows if r["fresh"] is not None)
    p95 = fresh[int(0.95 * (len(fresh) - 1))] if fresh else float("inf")
    reasons = [] if p95 <= 2.0 else [f"freshness p95 {p95:.2f}s > 2s"]
    reasons += [] if rc_stop == 0 else [f"stop exit code {rc_stop}"]
    print(
        "\n| program | RSS first MB | RSS last MB | RSS max MB | slope 2nd half MB/min | fds first->last |"
        " threads first->last | restarts |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in PROGRAMS:
        pts = [(r["t"], r[n]) for r in rows if r[n]]
        hp = [(r["t"], r[n]) for r in half if r[n]]
        if not pts or not hp:
            print(f"| {n} | - | - | - | - | - | - | - |")
            continue
        s = slope([(t - t0) / 60 for t, _ in hp], [v[0] for _, v in hp])
        # A leak shows as a floor that rises: the fewest handles (threads) in the last samples
        # above the most in the first samples of the second half. DuckDB's worker threads and
        # the WAL come and go with each batch, so single samples flap.
        k = max(1, min(3, len(hp) // 3))
        fd_grow = min(v[1] for _, v in hp[-k:]) - max(v[1] for _, v in hp[:k])
        th_grow = min(v[2] for _, v in hp[-k:]) - max(v[2] for _, v in hp[:k])
        reasons += [f"{n}: RSS {s:+.2f} MB/min"] if s > args.max_slope else []
        reasons += [f"{n}: handles floor +{fd_grow}"] if fd_grow > 0 else []
        reasons += [f"{n}: threads floor +{th_grow}"] if th_grow > 0 else []
        reasons += [f"{n}: restarted {restarts[n]} times"] if restarts[n] else []
        print(
            f"| {n} | {pts[0][1][0]:.1f} | {pts[-1][1][0]:.1f} | {max(v[0] for _, v in pts):.1f} | {s:+.3f} |"
            f" {pts[0][1][1]}->{pts[-1][1][1]} | {pts[0][1][2]}->{pts[-1][1][2]} | {restarts[n]} |"
        )
    print(
        f"\nchart freshness over {len(fresh)} samples: median {statistics.median(fresh):.2f} s, "
        f"p95 {p95:.2f} s, max {fresh[-1]:.2f} s; {stored} readings stored "
        f"({stored / max(1e-9, rows[-1]['t'] - t0):.0f}/s while sampled); stop exit code {rc_stop}"
    )
    print("flat: yes" if not reasons else f"flat: NO ({'; '.join(reasons)})")
    return 0 if not reasons else 1


class open_page:
    """The operator page open in headless chromium for the whole soak, as on an operator's desk:
    the app queries DuckDB only while someone views it."""

    def __init__(self, url: str):
        self.pw = self.browser = None
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        if not Path(chromium).exists():
            print("no chromium: the page is not viewed during the soak (make system-deps)", flush=True)
            return
        from playwright.sync_api import sync_playwright

        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, timeout=120_000)
        page.wait_for_selector("[data-testid='stApp']", timeout=120_000)
        print(f"page open in headless chromium: {url}", flush=True)

    def close(self) -> None:
        if self.browser:
            self.browser.close()
        if self.pw:
            self.pw.stop()


if __name__ == "__main__":
    sys.exit(main())
