"""Readings per second through each transport, embedded and Kafka (a local Tansu broker), same run.

Kafka runs twice: with batch records (the default: many readings of a sensor per record) and with
`kafka_batch = false` (a record per reading, the original program's format: docs/origins.md). Two
measurements per transport, on the same generated readings, round-robin over `--sensors` sensors:
- transport: a producer sends N readings (flushing every 500, as the serial producer does a few
  times a second) and one consumer-group member polls and commits them all;
- end to end: producer -> detector (the real `run_detector` with the configured detectors) ->
  store (the real `run_store` writing DuckDB) until every reading is stored and judged by every
  detector, read back from DuckDB.

Parts run as threads of one process (one Python process shares its CPU time between them, so
these are lower bounds for separate processes); Kafka's group joins happen before the clock starts.
Run: `python -m bench.bench_transport [--n N] [--e2e-n N] [--sensors N]` or `make bench`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from lib.config import load_config
from lib.messages import INTERNAL, reading_message
from lib.transport import open_transport
from lib.transport.broker import Broker

SENSORS = tuple(f"s{i:03d}" for i in range(100))


def make_config(kind: str, data_dir: Path, bootstrap: str = "", batch: bool = True):
    config = load_config()
    transport = dataclasses.replace(
        config.transport,
        kind=kind,
        bootstrap_servers=bootstrap or "127.0.0.1:9092",
        kafka_batch=batch,
        # Tansu finishes a group join after about half the session timeout.
        session_timeout_ms=4000,
        max_poll_interval_ms=30000,
        metadata_max_age_ms=1000,
    )
    return dataclasses.replace(
        config, transport=transport, paths=dataclasses.replace(config.paths, data_dir=str(data_dir))
    )


def readings(n: int, seed: int = 7):
    rng = random.Random(seed)
    t0 = time.time_ns() // 1000
    for i in range(n):
        sensor = SENSORS[i % len(SENSORS)]
        yield reading_message(sensor, repr(round(20 + rng.gauss(0, 1), 3)), "bench", i + 1, t0 + i * 1000)


def produce(transport, n: int, flush_every: int = 500) -> None:
    out = transport.producer()
    try:
        for i, m in enumerate(readings(n), 1):
            out.send([m])
            if i % flush_every == 0:
                out.flush()
        out.flush()
    finally:
        out.close(drain_timeout=120.0)


def wait_joined(*consumers, timeout: float = 60.0) -> None:
    """Kafka consumers: poll (nothing is produced yet) until the group has given them partitions."""
    deadline = time.monotonic() + timeout
    for c in consumers:
        while c.owned_sensors() == set():  # None: a transport with no group to join
            if time.monotonic() > deadline:
                raise RuntimeError("consumer group join timed out")
            time.sleep(0.1)


def bench_transport_only(transport, n: int) -> float:
    transport.create_topics(SENSORS)
    consumer = transport.consumer("bench-transport", sensors=True)
    got = 0
    stop = threading.Event()

    def consume():
        nonlocal got
        while got < n and not stop.is_set():
            batch = consumer.poll(5000, 0.2)
            if batch:
                got += len(batch)
                consumer.commit()

    # Join first (Kafka): a poll loop in the thread, the clock starts once partitions are assigned.
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_joined(consumer)
    t0 = time.perf_counter()
    produce(transport, n)
    thread.join(timeout=300)
    elapsed = time.perf_counter() - t0
    stop.set()
    consumer.close()
    if got < n:
        raise RuntimeError(f"transport bench: received {got} of {n}")
    return n / elapsed


def bench_end_to_end(config, transport, n: int) -> float:
    from lib.detect.detection import Judge, check_detection_config, run_detector
    from lib.page import queries
    from lib.store.reader import read_db
    from lib.store.schema import init_db
    from lib.store.sink import run_store

    check_detection_config(config)
    transport.create_topics((*SENSORS, *INTERNAL))
    init_db(config.db_path)
    stop = threading.Event()
    want = n * len(config.detection.detectors)
    progress = {"states": 0}
    finished = threading.Event()

    def on_flush(_n):
        # In the store's thread, between its writes; the store holds the file, so this goes
        # through its read socket (lib.store.readserver), as the page's queries do.
        with read_db(config.db_path) as conn:
            progress["states"] = sum(
                n for d, (n, _) in queries.judged_counts(conn).items() if not d.startswith("rule:")
            )
        if progress["states"] >= want:
            finished.set()

    detector = transport.consumer("detectors", sensors=True)
    store = transport.consumer("store", topics=INTERNAL, sensors=True)
    threads = [
        threading.Thread(target=run_detector, args=(Judge(config), detector, stop), daemon=True),
        threading.Thread(
            target=run_store,
            args=(config.db_path, store, stop, config.store.flush_interval, config.store.max_batch, on_flush),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    wait_joined(detector, store)
    t0 = time.perf_counter()
    produce(transport, n)
    finished.wait(600)
    elapsed = time.perf_counter() - t0
    done = progress["states"]
    stop.set()
    for t in threads:
        t.join(timeout=60)
    detector.close()
    store.close()
    if done < want:
        raise RuntimeError(f"end-to-end bench: {done} of {want} states stored")
    return n / elapsed


def main(argv=None) -> int:
    global SENSORS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000, help="readings for the transport-only figure")
    ap.add_argument("--e2e-n", type=int, default=2_000, help="readings for the end-to-end figure")
    ap.add_argument("--sensors", type=int, default=len(SENSORS), help="sensors (topics) the readings go round")
    args = ap.parse_args(argv)
    SENSORS = tuple(f"s{i:03d}" for i in range(args.sensors))
    logging.basicConfig(level=logging.WARNING)
    rows = []
    print(f"{args.sensors} sensors", flush=True)
    with tempfile.TemporaryDirectory(prefix="vigie-bench-") as tmp, Broker(log_path=Path(tmp) / "tansu.log") as broker:
        for name, kind, batch in (
            ("embedded", "embedded", True),
            ("kafka", "kafka", True),
            ("kafka, record per reading", "kafka", False),
        ):
            for what, n in (("transport", args.n), ("end to end", args.e2e_n)):
                data = Path(tmp) / f"{name.replace(' ', '-').replace(',', '')}-{what.replace(' ', '-')}"
                # A fresh data folder per measurement keeps the DuckDB file and spool apart; each
                # Kafka measurement starts on a clean broker.
                if kind == "kafka":
                    broker.stop()
                    broker.start()
                config = make_config(kind, data, broker.bootstrap, batch)
                transport = open_transport(config)
                try:
                    rate = (
                        bench_transport_only(transport, n)
                        if what == "transport"
                        else bench_end_to_end(config, transport, n)
                    )
                finally:
                    transport.close()
                rows.append((name, what, n, rate))
                print(f"  {name:<26} {what:<11} {n:>7} readings  {rate:>9,.0f} readings/s", flush=True)
    print()
    print("| transport | measure | readings | readings/s | vs embedded |")
    print("|---|---|---:|---:|---:|")
    base = {what: rate for name, what, _, rate in rows if name == "embedded"}
    for name, what, n, rate in rows:
        print(f"| {name} | {what} | {n} | {rate:,.0f} | {rate / base[what]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
