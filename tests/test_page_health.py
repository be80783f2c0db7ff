"""The page's health panel (lib/page/health.py) on real parts: a real supervisord with a program
stopped and one that cannot start, producers' status files, the embedded transport's backlog,
the store's status file; and sensor ages that are never negative."""

import re
from datetime import datetime, timedelta

import pandas as pd

from lib.config import load_config
from lib.ingest.status import CONNECTED, PORT_BUSY, WAITING, StatusWriter
from lib.messages import json_message
from lib.page import health
from lib.store.status import StoreStatus
from lib.transport.embedded import EmbeddedTransport
from tests.supervised import SLEEPER, supervisord


def test_the_panel_names_a_stopped_producer_a_fatal_program_and_a_busy_port(tmp_path):
    config = load_config()
    status = StatusWriter(config.run_dir, "ttyACM0", "/dev/ttyACM0")
    status.set(PORT_BUSY, detail="held by pid 4242 (screen)")
    with supervisord(config.data_dir, {"store": SLEEPER, "producer": SLEEPER, "detector": "/bin/false"}) as ctl:
        ok = health.check(config)
        assert {p.name: p.state for p in ok.programs} == {
            "detector": "FATAL",
            "producer": "RUNNING",
            "store": "RUNNING",
        }
        ctl.supervisor.stopProcess("producer")
        found = health.check(config)
    about_producer = [p for p in found.problems if "producer" in p]
    assert len(about_producer) == 1 and re.fullmatch(
        r"program \*\*producer\*\* is stopped \(for \d+ s\)", about_producer[0]
    )
    assert any(p.startswith("program **detector** is FATAL: supervisord gave up starting it") for p in found.problems)
    assert any(
        "board **ttyACM0** (/dev/ttyACM0): the port is held by another program" in p
        and "held by pid 4242 (screen)" in p
        for p in found.problems
    )
    # no supervisord (the page served alone): said, not raised
    alone = health.check(config)
    assert alone.programs is None and alone.supervisor_error


def test_boards_the_store_and_the_backlog_in_sentences(tmp_path):
    config = load_config()
    transport = EmbeddedTransport(config.bus_path)
    producer = transport.producer()
    producer.send([json_message("humidite", "s1", {"v": i}) for i in range(30)])
    producer.flush()
    detectors = transport.consumer("detectors", sensors=True)
    first = detectors.poll(10)
    detectors.commit()
    store = transport.consumer("store", topics=["_vigie.states"], sensors=True)
    assert transport.backlog() == {"detectors": 20, "store": 30}
    assert len(first) == 10
    producer.send([json_message("humidite", "s1", {"v": 1})] * 5 + [json_message("_vigie.states", "s1", {})] * 2)
    producer.flush()
    assert transport.backlog() == {"detectors": 25, "store": 37}
    detectors.close(), store.close(), producer.close()

    board = StatusWriter(config.run_dir, "arduino", "/dev/ttyACM0", clock=lambda: 1000.0)
    board.set(WAITING, detail="no such port")
    quiet = health.check(config, now=1030.0, transport=transport)
    assert quiet.problems[0] == "board **arduino** (/dev/ttyACM0): no board connected for 30 s: no such port"
    board.set(CONNECTED)
    board.lines(500, at=1029.0)
    board.flush()
    StoreStatus(config.run_dir, clock=lambda: 1010.0).wrote(400)
    stuck = health.check(config, now=1030.0, transport=transport)
    assert stuck.problems == [
        "the **store** has not written for 20 s while boards send lines (disk full, or the store stopped?)"
    ]
    StoreStatus(config.run_dir, clock=lambda: 1029.5).wrote(500)
    assert health.check(config, now=1030.0, transport=transport).problems == []
    assert health.problems(
        health.SystemHealth(
            now=0,
            programs=None,
            supervisor_error="x",
            boards=[],
            backlog={"detectors": 25_000},
            backlog_error=None,
            store_last_write=None,
        )
    ) == ["**detectors** is 25,000 messages behind on the transport"]


def test_a_sensors_age_is_never_negative():
    now = datetime(2026, 11, 30, 13, 51, 0, 200_000)
    sensors = pd.DataFrame(
        {
            "sensor": ["a", "b"],
            "last_ts": [now - timedelta(seconds=12), now + timedelta(seconds=0.5)],
            "per_s": [1.0, 20.0],
        }
    )
    aged = health.with_ages(sensors, now)
    assert list(aged["age_s"]) == [12.0, 0.0] and list(aged["ahead_s"]) == [0.0, 0.5]
    assert list(health.stale(aged)) == [True, False]
