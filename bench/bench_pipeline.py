"""The pipeline, end to end, beside the original program's consumer (docs/origins.md; its rows are
called "seed"): `python -m bench.bench_pipeline`.

One run, one process tree, the same generated input (`--sensors` sensors, `topic!value` lines):

- **seed**: a faithful re-implementation of the original program's consumer loop: a FIFO of 21
  per topic, DBSCAN and IsolationForest (100 trees) refitted on it for every reading, and each
  algorithm's pickle history re-read and re-written for every message. It is slow, so it runs on a
  slice (`--seed-readings`, or `--seed-seconds`, whichever ends first) after its FIFOs are full, and
  its figures are rates. Its latency is its service time per message with no queue in front: at
  any higher offered rate its queue grows without bound.
- **vigie**: the real code in three processes, as supervisord runs them: the producer (stamping,
  parsing and batching lines into the embedded log exactly as `SerialProducer` does for bytes read
  from the port; the bytes come from memory at `--rate` lines/s instead of a pseudo-terminal), the
  detector worker (`run_detector`) and the single DuckDB writer (`run_store`). Latency is from a
  line's arrival (its receive stamp) to the moment its states are committed in DuckDB and the file
  is closed for readers, over readings that arrived after a warm-up (`--warmup`, 3 s: the first
  fits and the first DuckDB write); readings/s is over the same steady span. Run once with the
  configured detector set (plus threshold rules on every sensor), once more with the operator page
  open (a fourth process doing the Live view's refresh of all sensors every `[app] refresh_s`, as
  the app does: "+page"), and once without IsolationForest.

Printed: readings/s, p50/p99 latency, CPU seconds per 1,000 readings (all the pipeline's
processes), peak resident memory (the largest program; per program below the table), bytes per
stored reading on disk (DuckDB file with the reading's states, or the original program's pickle
files), and each figure's ratio to the original program's, then each program's memory and CPU and
the CPU-bound capacity (what two otherwise idle cores would sustain). Absolute figures are
indicative on a shared machine.

`--transport kafka` runs the three programs over a Kafka-protocol broker instead of the embedded log:
a fresh Tansu process on 127.0.0.1 per run (lib.transport.broker), the sensor and internal topics created
before the programs start, and `[transport] kind = "kafka"` given to them through VIGIE_TRANSPORT_*.
`--detector-workers 2` runs two detectors in one consumer group, as supervisord-kafka.conf does.

`BENCH_DIR=<dir>` keeps the runs' data folders and programs' stderr there; `BENCH_DEBUG=1` makes the
store print each write's rows, duration and latencies to its stderr, and its p99 per second of
arrival at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# -- the input ---------------------------------------------------------------------------------
def generate_lines(n: int, sensors: int, seed: int = 8) -> list[bytes]:
    """`n` board lines `s042!51.27\\r\\n`, round-robin over `sensors` sensors: a slow cycle, noise and
    a spike on about one reading in 500."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    sensor = idx % sensors
    base = 20.0 + 3.0 * (sensor % 17)
    value = base + 2.0 * np.sin(idx / (sensors * 200.0) + sensor) + rng.normal(0.0, 0.3, n)
    spikes = rng.random(n) < 0.002
    value[spikes] += rng.choice([-1.0, 1.0], spikes.sum()) * 8.0
    return [f"s{s:03d}!{v:.2f}\r\n".encode("ascii") for s, v in zip(sensor.tolist(), value.tolist())]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# -- the original program's consumer ----------------------------------------------------------
def separateur_serial(chaine: str, separateur: str = "!"):
    """The original program's line split (at the last separator), verbatim in behaviour."""
    indice = -1
    for i in range(len(chaine) - 1, -1, -1):
        if chaine[i] == separateur:
            indice = i
            break
    return chaine[:indice], chaine[indice + 1 :]


def run_seed(lines: list[bytes], workdir: Path, max_readings: int, max_seconds: float) -> dict:
    """The original program's consumers (one per algorithm and topic there; here both algorithms
    in turn for each message, on one core) over `lines`: warm-up until every FIFO is full, then a
    timed slice. `detectionAnomaly` is undefined in the original program; here it is the obvious
    reading: fit the algorithm on the FIFO and return the label of the newest value (-1 anomaly)."""
    import warnings

    import pandas as pd
    from sklearn.cluster import DBSCAN
    from sklearn.ensemble import IsolationForest

    warnings.filterwarnings("ignore")

    def detection_dbscan(file, taille):
        x = pd.DataFrame([float(v) for v in file], columns=["c1"])
        return int(DBSCAN(eps=0.5, min_samples=4).fit(x).labels_[-1])

    def detection_iforest(file, taille):
        x = pd.DataFrame([float(v) for v in file], columns=["c1"])
        return int(IsolationForest(n_estimators=100).fit(x).predict(x.iloc[[-1]])[0])

    taille_file = 20 + 1
    algos = [("DBSCAN", detection_dbscan), ("ISOLATION", detection_iforest)]
    files: dict[tuple[str, str], list[str]] = {}
    paths = {name: workdir / f"saveLISTEDONNEE_{name}.txt" for name, _ in algos}
    for p in paths.values():
        with open(p, "wb") as f:
            pickle.dump([], f)
    latencies, timed, t_start, cpu_start = [], 0, None, None
    n_topics = len({separateur_serial(line.decode("utf-8")[:-2])[0] for line in lines[:1000]})
    warm = (taille_file + 2) * n_topics  # messages until every topic's FIFO judges
    for i, raw in enumerate(lines):
        if i == warm:
            t_start, cpu_start = time.perf_counter(), _cpu_s()
        arrival = time.perf_counter()
        topic, message = separateur_serial(raw.decode("utf-8")[:-2])
        for name, detection in algos:
            msg = message
            file = files.setdefault((name, topic), [])
            if len(file) > taille_file:
                file.append(msg)
                file.pop(0)
                etat = detection(file, taille_file)
            else:
                file.append(msg)
                etat = -2
            donnee = (msg, time.time(), etat)
            with open(paths[name], "rb") as f:
                liste = pickle.load(f)
            liste.append(donnee)
            with open(paths[name], "wb") as f:
                pickle.dump(liste, f)
        if t_start is not None:
            latencies.append(time.perf_counter() - arrival)
            timed += 1
            if timed >= max_readings or time.perf_counter() - t_start >= max_seconds:
                break
    elapsed = time.perf_counter() - t_start
    stored = i + 1
    disk = sum(p.stat().st_size for p in paths.values())
    lat = np.array(latencies)
    return {
        "readings": timed,
        "rate": timed / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "cpu_per_1000": (_cpu_s() - cpu_start) / timed * 1000,
        "rss": {"consumer": _peak_rss_mb()},
        "bytes_per_reading": disk / stored,
    }


# -- Vigie's three programs ----------------------------------------------------------------------
# The threshold rules on for every sensor (range, rate of change, stuck), as an operator would set
# them: each reading gets a "rule:<name>" state from each.
RULES = {"*": {"min": -50.0, "max": 150.0, "max_rate": 1000.0, "stuck_n": 50}}


def _config(data_dir: Path, detectors: list[str] | None, rules: bool = False):
    from lib.config import load_config

    overrides: dict = {"paths": {"data_dir": str(data_dir)}}
    detection = {}
    if detectors:
        detection["detectors"] = detectors
    if rules:
        detection["rules"] = RULES
    if detection:
        overrides["detection"] = detection
    return load_config(overrides=overrides)


def _stop_on_term() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def _join_first(consumer, timeout: float = 60.0) -> None:
    """Kafka: poll until the group has given this member its partitions, before saying ready, so the
    run does not start with a backlog of the group join's seconds (embedded: nothing to join). The
    producer starts after "ready", so these polls find nothing."""
    deadline = time.monotonic() + timeout
    while consumer.owned_sensors() == set():  # None: a transport with no group to join
        if consumer.poll(1, 0.2) or time.monotonic() > deadline:
            raise RuntimeError("Kafka group join: timed out, or readings found before the producer started")


def role_producer(args) -> dict:
    from lib.ingest.producer import SerialProducer
    from lib.ingest.serial_port import LineSplitter
    from lib.transport import open_transport

    config = _config(Path(args.dir), None)
    lines = generate_lines(args.readings, args.sensors)
    transport = open_transport(config)
    out = transport.producer()
    producer = SerialProducer(out, "bench", 9600, max_line=config.serial.max_line)
    splitter = LineSplitter(config.serial.max_line)
    stop = _stop_on_term()
    cpu0 = _cpu_s()
    # What `SerialProducer._read` does with each `port.read()`: split, stamp, hand on, maybe flush.
    # Lines due by now are handed over in one chunk, as a port read returns what is waiting.
    t0, i, n = time.monotonic(), 0, len(lines)
    while i < n and not stop.is_set():
        due = n if args.rate <= 0 else min(n, int((time.monotonic() - t0) * args.rate) + 1)
        if due > i:
            data = b"".join(lines[i:due])
            i = due
            ts = time.time_ns() // 1000
            for line, too_long in splitter.feed(data):
                producer.handle_line(line, ts, too_long=too_long)
        producer.maybe_flush()
        if args.rate > 0 and i < n:
            time.sleep(0.002)
    producer.maybe_flush(force=True)
    sent_s = time.monotonic() - t0
    out.close()
    return {"cpu": _cpu_s() - cpu0, "rss": _peak_rss_mb(), "sent": i, "sent_s": sent_s, "handled": i}


def role_detector(args) -> dict:
    from lib.detect.detection import Judge, run_detector
    from lib.transport import open_transport

    config = _config(Path(args.dir), args.detectors.split(",") if args.detectors else None, rules=not args.no_rules)
    transport = open_transport(config)
    consumer = transport.consumer("detectors", sensors=True)
    stop = _stop_on_term()
    cpu0 = _cpu_s()
    _join_first(consumer)
    Path(args.dir, f"{_proc_name(args.role, args.worker)}.ready").touch()
    n = run_detector(Judge(config), consumer, stop)
    consumer.close()
    return {"cpu": _cpu_s() - cpu0, "rss": _peak_rss_mb(), "judged": n, "handled": n}


def _proc_name(role: str, worker: int) -> str:
    """A program's name in the run's files: its role, or detector-<k> for the k-th of several
    detector workers (worker 0: the only one)."""
    return role if not worker else f"{role}-{worker}"


def role_store(args) -> dict:
    import lib.store.writer as store_writer
    from lib.messages import INTERNAL
    from lib.store.schema import init_db
    from lib.store.sink import run_store
    from lib.transport import open_transport

    config = _config(Path(args.dir), None)
    init_db(config.db_path)
    transport = open_transport(config)
    consumer = transport.consumer("store", topics=INTERNAL, sensors=True)
    stop = _stop_on_term()
    arrivals: list[np.ndarray] = []
    commits: list[np.ndarray] = []
    counts = {"readings": 0, "first_arrival_us": None, "last_commit_us": None}
    progress = Path(args.dir, "stored.txt")
    real_write = store_writer.Writer.write

    def write_and_time(writer, batch, *a, **kw):
        t_write = time.monotonic()
        real_write(writer, batch, *a, **kw)
        # Committed and closed: from now on a reader sees these states.
        now_us = time.time_ns() // 1000
        arrived = {(session, seq): ts for session, seq, ts in batch.judged_readings()}
        if os.environ.get("BENCH_DEBUG"):
            ts = list(arrived.values()) or [0]
            print(
                f"write {len(batch)} rows in {time.monotonic() - t_write:.3f}s; "
                f"oldest {time.time() - min(ts) / 1e6:.3f}s "
                f"newest {time.time() - max(ts) / 1e6:.3f}s",
                file=sys.stderr,
                flush=True,
            )
        if arrived:
            first = min(arrived.values())
            if counts["first_arrival_us"] is None or first < counts["first_arrival_us"]:
                counts["first_arrival_us"] = first
            counts["last_commit_us"] = now_us
            arrivals.append(np.fromiter(arrived.values(), dtype=np.int64, count=len(arrived)))
            commits.append(np.full(len(arrived), now_us, dtype=np.int64))
            counts["readings"] += len(arrived)
            progress.write_text(str(counts["readings"]))

    store_writer.Writer.write = write_and_time
    cpu0 = _cpu_s()
    _join_first(consumer)
    Path(args.dir, "store.ready").touch()
    import lib.page.queries  # noqa: F401  (the named reads the store answers)

    run_store(config.db_path, consumer, stop, config.store.flush_interval, config.store.max_batch)
    consumer.close()
    arrived = np.concatenate(arrivals) if arrivals else np.zeros(0, dtype=np.int64)
    committed = np.concatenate(commits) if commits else np.zeros(0, dtype=np.int64)
    # Steady state: readings that arrived after the warm-up (programs' first fits, first writes).
    start = (counts["first_arrival_us"] or 0) + int(args.warmup * 1e6)
    steady = arrived >= start
    if not steady.any():  # far behind: every reading judged arrived during the warm-up
        steady = np.ones(len(arrived), dtype=bool)
        start = counts["first_arrival_us"] or 0
    lat = (committed[steady] - arrived[steady]) / 1e6 if steady.any() else np.array([np.nan])
    span = (counts["last_commit_us"] - start) / 1e6 if steady.any() else 0.0
    if os.environ.get("BENCH_DEBUG") and steady.any():
        # p99 per second of arrival: a transient stall and a queue that grows look different here
        sec = (arrived[steady] - start) // 1_000_000
        print(
            "p99 by second of arrival: " + " ".join(f"{np.percentile(lat[sec == s], 99):.2f}" for s in np.unique(sec)),
            file=sys.stderr,
            flush=True,
        )
    return {
        "cpu": _cpu_s() - cpu0,
        "rss": _peak_rss_mb(),
        "judged_stored": counts["readings"],
        "handled": counts["readings"],
        "steady": int(steady.sum()),
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "db_bytes": config.db_path.stat().st_size,
        "span_s": span,
    }


def role_viewer(args) -> dict:
    """The operator page open on the Live view, all sensors: every `refresh_s` the app's refresh
    (`lib.page.queries.live_fetch` through `read_db`, then `live_shape`), timed."""
    from datetime import timedelta

    from lib.page import queries
    from lib.store.reader import read_db

    config = _config(Path(args.dir), None)
    stop = _stop_on_term()
    cpu0 = _cpu_s()
    took: list[float] = []
    while not stop.is_set():
        t0 = time.monotonic()
        now = queries.utc_now().replace(microsecond=0)
        try:
            with read_db(config.db_path) as conn:
                raw = queries.live_fetch(conn, (), now - timedelta(minutes=5), now)
            queries.live_shape(raw)
            took.append(time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001  (the page shows "busy" and retries; so does this)
            print(f"refresh failed: {exc}", file=sys.stderr, flush=True)
        stop.wait(max(0.0, config.app.refresh_s - (time.monotonic() - t0)))
    t = np.array(took or [np.nan])
    return {
        "cpu": _cpu_s() - cpu0,
        "rss": _peak_rss_mb(),
        "handled": 0,
        "refreshes": len(took),
        "refresh_p50": float(np.percentile(t, 50)),
        "refresh_max": float(t.max()),
    }


ROLES = {"producer": role_producer, "detector": role_detector, "store": role_store, "viewer": role_viewer}


def _spawn(role: str, workdir: Path, extra: list[str], worker: int = 0) -> subprocess.Popen:
    with open(workdir / f"{_proc_name(role, worker)}.err", "wb") as err:
        return subprocess.Popen(
            [PY, "-m", "bench.bench_pipeline", "--role", role, "--dir", str(workdir), "--worker", str(worker), *extra],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name} did not appear within {timeout:.0f}s")
        time.sleep(0.05)


def run_vigie(
    workdir: Path,
    sensors: int,
    readings: int,
    rate: float,
    detectors: str,
    drain_s: float,
    rules: bool = True,
    warmup: float = 3.0,
    viewer: bool = False,
    detector_workers: int = 1,
) -> dict:
    """The three programs on a fresh data folder (and the page's refreshes if `viewer`); returns
    the figures, or raises. `detector_workers` > 1 (Kafka): that many detectors in one group."""
    workdir.mkdir(parents=True)
    common = ["--sensors", str(sensors), "--readings", str(readings), "--rate", str(rate), "--warmup", str(warmup)]
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["store"] = _spawn("store", workdir, common)
        _wait_file(workdir / "store.ready", 60)
        for k in range(detector_workers):
            # One at a time: each says ready once the group has given it partitions, so the
            # group's rebalances are over before the producer starts.
            worker = 0 if detector_workers == 1 else k + 1
            name = _proc_name("detector", worker)
            procs[name] = _spawn(
                "detector", workdir, [*common, "--detectors", detectors, *(["--no-rules"] if not rules else [])], worker
            )
            _wait_file(workdir / f"{name}.ready", 60)
        if viewer:
            procs["viewer"] = _spawn("viewer", workdir, common)
        t0 = time.monotonic()
        procs["producer"] = _spawn("producer", workdir, common)
        if procs["producer"].wait(timeout=readings / rate * 3 + 60 if rate > 0 else 600):
            raise RuntimeError(f"producer failed: {(workdir / 'producer.err').read_text()[-2000:]}")
        produced = json.loads((workdir / "producer.json").read_text())["sent"]
        progress = workdir / "stored.txt"
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            try:
                stored = int(progress.read_text()) if progress.exists() else 0
            except ValueError:  # caught mid-write
                stored = 0
            if stored >= produced:
                break
            for name, p in procs.items():
                if p.poll() not in (None, 0):
                    raise RuntimeError(f"{name} failed: {(workdir / f'{name}.err').read_text()[-2000:]}")
            time.sleep(0.05)
        wall = time.monotonic() - t0
        for name in ("viewer", *(n for n in procs if n.startswith("detector")), "store"):
            if name not in procs:
                continue
            procs[name].send_signal(signal.SIGTERM)
            procs[name].wait(timeout=120)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    stats = {name: json.loads((workdir / f"{name}.json").read_text()) for name in procs}
    workers = [stats.pop(name) for name in list(stats) if name.startswith("detector-")]
    if workers:  # the detectors as one program: their CPU and readings summed, the largest RSS
        stats[f"{len(workers)} detectors (RSS: each)"] = {
            "cpu": sum(w["cpu"] for w in workers),
            "handled": sum(w["handled"] for w in workers),
            "rss": max(w["rss"] for w in workers),
            "processes": len(workers),
        }
    page = stats.pop("viewer", None)
    stored = stats["store"]["judged_stored"]
    # Each program's CPU over the readings it handled (a program that fell behind handled fewer).
    cpu_by_program = {name: s["cpu"] / max(s["handled"], 1) * 1000 for name, s in stats.items()}
    return {
        "readings": stored,
        "offered": rate,
        "kept_up": stored >= produced,
        "rate": stats["store"]["steady"] / (stats["store"]["span_s"] or wall),
        "p50": stats["store"]["p50"],
        "p99": stats["store"]["p99"],
        "cpu_per_1000": sum(cpu_by_program.values()),
        "rss": {name: s["rss"] for name, s in stats.items()},
        "cpu_by_program": cpu_by_program,
        # per process: several detector workers share the detectors' CPU
        "busiest": max(v / stats[name].get("processes", 1) for name, v in cpu_by_program.items()),
        "bytes_per_reading": stats["store"]["db_bytes"] / max(stored, 1),
        "page": page,
    }


@contextlib.contextmanager
def kafka_broker(sensors: int, workdir: Path):
    """A fresh Tansu broker for one run, its topics made, and the programs (which inherit this
    environment) configured for it."""
    import dataclasses

    from lib.config import load_config
    from lib.messages import INTERNAL
    from lib.transport.broker import Broker
    from lib.transport.kafkabus import KafkaTransport

    env = {
        "VIGIE_TRANSPORT_KIND": "kafka",
        # Tansu finishes a group join after about half the session timeout: keep the joins short.
        "VIGIE_TRANSPORT_SESSION_TIMEOUT_MS": "4000",
        "VIGIE_TRANSPORT_MAX_POLL_INTERVAL_MS": "60000",
        "VIGIE_TRANSPORT_METADATA_MAX_AGE_MS": "1000",
    }
    workdir.mkdir(parents=True, exist_ok=True)
    with Broker(log_path=workdir / "tansu.log") as broker:
        env["VIGIE_TRANSPORT_BOOTSTRAP_SERVERS"] = broker.bootstrap
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            config = load_config()
            config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(workdir)))
            # Topics exist before the groups join, so no rebalance happens as each one appears.
            KafkaTransport(config).create_topics([*(f"s{i:03d}" for i in range(sensors)), *INTERNAL])
            yield broker
            import psutil

            cpu = psutil.Process(broker.proc.pid).cpu_times()
            print(
                f"  the Tansu broker used {cpu.user + cpu.system:.1f} CPU s (not in the table's CPU figures)",
                flush=True,
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# -- the table ------------------------------------------------------------------------------------
def print_table(rows: list[tuple[str, dict]]) -> None:
    seed = rows[0][1]
    wide = max(34, *(len(name) for name, _ in rows))
    head = (
        f"{'run':<{wide}} {'readings':>9} {'readings/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'CPU s/1k':>9} "
        f"{'peak RSS MB':>11} {'B/reading':>10}  vigie/seed: rate, p99, CPU, bytes"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows:
        peak = max(r["rss"].values())
        ratio = (
            f"x{r['rate'] / seed['rate']:.0f}, x{r['p99'] / seed['p99']:.2f}, "
            f"x{r['cpu_per_1000'] / seed['cpu_per_1000']:.4f}, "
            f"x{r['bytes_per_reading'] / seed['bytes_per_reading']:.3f}"
        )
        print(
            f"{name:<{wide}} {r['readings']:>9} {r['rate']:>11,.0f} {r['p50'] * 1000:>9.1f} {r['p99'] * 1000:>9.1f} "
            f"{r['cpu_per_1000']:>9.3f} {peak:>11.0f} {r['bytes_per_reading']:>10.1f}  {'-' if r is seed else ratio}"
        )
    print("\npeak resident memory per program (MB), and CPU seconds per 1,000 readings per program:")
    for name, r in rows:
        print(f"  {name:<{wide + 2}} " + ", ".join(f"{k} {v:.0f}" for k, v in r["rss"].items()))
        if "cpu_by_program" in r:
            print(f"  {'':<{wide + 2}} " + ", ".join(f"{k} {v:.4f}" for k, v in r["cpu_by_program"].items()))
    print("\nCPU-bound capacity (what two otherwise idle cores would sustain, from CPU per reading: the")
    print("lesser of two cores over the whole pipeline's CPU and one core over its busiest program's):")
    for name, r in rows:
        busiest = r.get("busiest", r["cpu_per_1000"])
        print(f"  {name:<{wide + 2}} {min(2000 / r['cpu_per_1000'], 1000 / busiest):>10,.0f} readings/s")
    for name, r in rows[1:]:
        if r.get("page"):
            p = r["page"]
            print(
                f"page: {name}: the Live view (all sensors, 5 min span) refreshed {p['refreshes']} times, "
                f"each in {p['refresh_p50'] * 1000:.0f} ms (p50), at most {p['refresh_max'] * 1000:.0f} ms"
            )
    for name, r in rows[1:]:
        if r["kept_up"] and r["p99"] > 1.0:
            print(
                f"note: {name} stored everything, but fell behind {r['offered']:,.0f} readings/s offered: "
                "its latency includes the queue that built up"
            )
        if not r["kept_up"]:
            print(
                f"note: {name} did not keep up with {r['offered']:,.0f} readings/s offered: its rate is what it "
                "stored before the drain limit, its latency that of a growing queue"
            )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--dir")
    ap.add_argument("--sensors", type=int, default=100)
    ap.add_argument(
        "--rate", type=float, default=20_000, help="lines/s offered to the producer (0: as fast as it takes them)"
    )
    ap.add_argument("--seconds", type=float, default=15.0, help="how long Vigie is fed at --rate")
    ap.add_argument("--readings", type=int, default=0, help="(roles) lines to feed")
    ap.add_argument("--detectors", default="", help="comma-separated detector set (default: the configuration's)")
    ap.add_argument("--seed-readings", type=int, default=600)
    ap.add_argument("--seed-seconds", type=float, default=40.0)
    ap.add_argument("--drain", type=float, default=30.0, help="seconds allowed to store the last readings")
    ap.add_argument("--skip-without-iforest", action="store_true")
    ap.add_argument("--no-rules", action="store_true", help="without the threshold rules")
    ap.add_argument(
        "--no-viewer",
        action="store_true",
        help="skip the run with the page open (the Live view's refresh of all sensors every 2 s)",
    )
    ap.add_argument(
        "--transport",
        choices=("embedded", "kafka"),
        default="embedded",
        help="kafka: a local Tansu broker per run, topics made first",
    )
    ap.add_argument(
        "--detector-workers",
        type=int,
        default=1,
        help="detector processes in one consumer group (Kafka only; supervisord-kafka.conf "
        "runs 2): 1 runs the same programs as the embedded run",
    )
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds of arrivals left out of readings/s and latency (first fits, first writes)",
    )
    args = ap.parse_args(argv)
    if args.role:
        result = ROLES[args.role](args)
        Path(args.dir, f"{_proc_name(args.role, args.worker)}.json").write_text(json.dumps(result))
        return 0

    if args.detector_workers != 1 and args.transport != "kafka":
        ap.error("--detector-workers: the embedded transport runs one detector")
    from lib.config import load_config

    configured = list(load_config().detection.detectors)
    readings = int(args.rate * args.seconds) if args.rate > 0 else 300_000
    rows = []
    with tempfile.TemporaryDirectory(prefix="vigie-bench-") as tmp:
        tmp = Path(os.environ.get("BENCH_DIR") or tmp)
        print(
            f"input: {args.sensors} sensors, Vigie fed {readings:,} lines at {args.rate:,.0f}/s; "
            f"seed: a slice of up to {args.seed_readings} readings or {args.seed_seconds:.0f}s",
            flush=True,
        )
        seed_dir = tmp / "seed"
        seed_dir.mkdir()
        # The original program runs in its own process so that its CPU and memory are its own.
        code = (
            "import json,sys; from pathlib import Path; from bench.bench_pipeline import generate_lines, run_seed;"
            f"r = run_seed(generate_lines({args.seed_readings + 30 * args.sensors}, {args.sensors}), "
            f"Path({str(seed_dir)!r}),"
            f" {args.seed_readings}, {args.seed_seconds}); print(json.dumps(r))"
        )
        out = subprocess.run(
            [PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=args.seed_seconds * 10 + 300
        )
        if out.returncode:
            print(out.stderr[-3000:])
            return 1
        rows.append(("seed (DBSCAN+IForest refit, pickle)", json.loads(out.stdout.strip().splitlines()[-1])))
        if args.detectors:
            configured = args.detectors.split(",")
        rules = "" if args.no_rules else "+rules"
        sets = [("vigie " + "+".join(configured) + rules, ",".join(configured), False)]
        if not args.no_viewer:
            sets.append(("vigie " + "+".join(configured) + rules + " +page", ",".join(configured), True))
        without = [d for d in configured if d != "iforest"]
        if "iforest" in configured and without and not args.skip_without_iforest:
            sets.append(("vigie " + "+".join(without) + rules + " (no iforest)", ",".join(without), False))
        workers = args.detector_workers
        for name, dets, viewer in sets:
            if args.transport == "kafka":
                name += " over kafka" + (f", {workers} detectors" if workers > 1 else "")
            print(f"running {name} ...", flush=True)
            workdir = tmp / name.split(" (")[0].replace(",", "").replace(" ", "_").replace("+", "_").replace("__", "_")
            try:
                with (
                    kafka_broker(args.sensors, tmp / f"{workdir.name}-broker")
                    if args.transport == "kafka"
                    else contextlib.nullcontext()
                ):
                    rows.append(
                        (
                            name,
                            run_vigie(
                                workdir,
                                args.sensors,
                                readings,
                                args.rate,
                                dets,
                                args.drain,
                                not args.no_rules,
                                args.warmup,
                                viewer,
                                workers,
                            ),
                        )
                    )
            except Exception as exc:  # report the others' figures anyway
                print(f"{name} failed: {exc}")
                return 1
        print()
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
