"""Many sensors at a high rate through the real producer, embedded log, detector and store code
(in-process, no supervisord): every reading is stored exactly once and judged once by each
detector, and replays (the store's or the detectors') add nothing. Behaviour only: the speed is
measured by bench/bench_pipeline.py."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter

import pytest

from lib.config import load_config
from lib.detect.detection import Judge, run_detector
from lib.detect.rules import rules_for
from lib.ingest.producer import SerialProducer
from lib.ingest.protocol import format_line
from lib.ingest.serial_port import LineSplitter
from lib.messages import INTERNAL
from lib.store.reader import read_db
from lib.store.schema import init_db
from lib.store.sink import run_store
from lib.transport.embedded import EmbeddedTransport

SENSORS = 120


def lines_for(n_per_sensor: int) -> list[bytes]:
    return [
        format_line(f"s{s:03d}", 20.0 + s % 7 + 0.1 * (i % 9) + (15.0 if i == n_per_sensor - 3 else 0.0))
        for i in range(n_per_sensor)
        for s in range(SENSORS)
    ]


def produce(transport, lines: list[bytes]) -> SerialProducer:
    """What the producer does with bytes read from the port, fed as fast as it takes them."""
    out = transport.producer()
    producer = SerialProducer(out, "test", 9600)
    splitter = LineSplitter(512)
    data = b"".join(lines)
    for i in range(0, len(data), 8192):  # port reads return arbitrary chunks
        for line, too_long in splitter.feed(data[i : i + 8192]):
            producer.handle_line(line, 1_700_000_000_000_000 + i, too_long=too_long)
        producer.maybe_flush(force=i % 65536 == 0)
    out.close()
    return producer


def detect(transport, config, n: int) -> int:
    consumer = transport.consumer("detectors", sensors=True)
    try:
        return run_detector(Judge(config), consumer, threading.Event(), count=n, poll_timeout=0.05)
    finally:
        consumer.close()


def store(transport, db) -> int:
    consumer = transport.consumer("store", topics=INTERNAL, sensors=True)
    stop = threading.Event()
    stop.set()  # drain what is there, write it, return
    try:
        return run_store(db, consumer, stop, flush_interval=0.05, max_batch=4000)
    finally:
        consumer.close()


def counts(db):
    with read_db(db) as conn:
        readings = conn.execute("SELECT count(*), count(DISTINCT (session_id, seq)) FROM readings").fetchone()
        states = dict(conn.execute("SELECT detector, count(*) FROM states GROUP BY 1").fetchall())
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT session_id, seq, detector FROM states GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        per_sensor = Counter(dict(conn.execute("SELECT sensor, count(*) FROM readings GROUP BY 1").fetchall()))
    return readings, states, dup, per_sensor


@pytest.mark.parametrize("detectors, per_sensor", [(None, 30), (["dbscan"], 120)])
def test_many_sensors_stored_once_judged_by_each_detector_and_replays_add_nothing(tmp_path, detectors, per_sensor):
    # the plumbing is under test, not the calibration: raw decisions judge from the 21st reading,
    # so a few dozen readings per sensor already carry flags
    raw = {"calibrate": False}
    overrides = {
        "paths": {"data_dir": str(tmp_path / "data")},
        "detection": {"params": {"dbscan": raw, "iforest": raw}},
    }
    if detectors:
        overrides["detection"]["detectors"] = detectors
    config = load_config(overrides=overrides)
    names = list(config.detection.detectors) + rules_for(config, "*").active
    transport = EmbeddedTransport(config.bus_path)
    init_db(config.db_path)
    lines = lines_for(per_sensor)
    n = len(lines)

    producer = produce(transport, lines)
    assert producer.counts["readings"] == n
    assert detect(transport, config, n) == n
    store(transport, config.db_path)

    readings, states, dup, per = counts(config.db_path)
    assert readings == (n, n)
    assert states == {name: n for name in names}
    assert dup == 0
    assert per == Counter({f"s{s:03d}": per_sensor for s in range(SENSORS)})
    with read_db(config.db_path) as conn:
        orphans = conn.execute("SELECT count(*) FROM readings r ANTI JOIN states s USING (session_id, seq)").fetchone()
        spikes = conn.execute("SELECT count(DISTINCT sensor) FROM states WHERE state = 'anomaly'").fetchone()
    assert orphans == (0,)
    assert spikes[0] > 0

    # The store crashes after writing but before committing: its whole history comes again.
    # And a detector group restarts from scratch (Kafka's at-least-once): every state is re-sent
    # with new offsets. Neither adds a row.
    with sqlite3.connect(config.bus_path) as bus:
        bus.execute("DELETE FROM positions")
    assert detect(transport, config, n) == n
    assert store(transport, config.db_path) >= n
    assert counts(config.db_path) == (readings, states, dup, per)
