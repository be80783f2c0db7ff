"""The whole system over a real Kafka-protocol broker (Tansu on 127.0.0.1): two detector workers in
one group, one killed with SIGKILL mid-stream; and a 30 s broker outage with a restart that comes
back empty. Checked, as in test_e2e, by comparing the board's ledger with the DuckDB file."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import pytest

from lib.detect import detectors
from lib.ingest.protocol import parse_line
from lib.transport.broker import Broker
from tests.system import System, wait_for

pytestmark = pytest.mark.e2e

SENSORS = {"humidite", "temperature"}


def kafka_env(broker: Broker, ledger, n: int, rate: float) -> dict[str, str]:
    return {
        "VIGIE_TRANSPORT_KIND": "kafka",
        "VIGIE_TRANSPORT_BOOTSTRAP_SERVERS": broker.bootstrap,
        # Tansu completes a group join only after about half the session timeout: keep it short here;
        # a batch may take longer than that to judge on a busy machine, hence the longer poll interval.
        "VIGIE_TRANSPORT_MAX_POLL_INTERVAL_MS": "30000",
        "VIGIE_TRANSPORT_SESSION_TIMEOUT_MS": "4000",
        "VIGIE_TRANSPORT_METADATA_MAX_AGE_MS": "1000",
        # the transport is under test: the original program's two detectors and no rules keep
        # the counts plain (every reading judged once by each)
        "VIGIE_DETECTION_DETECTORS": "dbscan,iforest",
        "VIGIE_DETECTION_RULES": "{}",
        "VIGIE_SIMULATOR_SCENARIO": "data/scenarios/spikes.toml",
        "VIGIE_SIMULATOR_RATE": str(rate),
        "VIGIE_SIMULATOR_COUNT": str(n),
        "VIGIE_SIMULATOR_LEDGER": str(ledger),
    }


def count(system: System, what: str) -> int:
    return system.count(what)


def assigned_pids(system: System) -> dict[int, str]:
    """pid -> the last partition assignment it logged."""
    found = {}
    for pid, parts in re.findall(r"pid (\d+): partitions assigned: (.*)", system.log()):
        found[int(pid)] = parts
    return found


def check_stored_once_judged_once(system: System, ledger, n: int) -> None:
    written = Counter()
    for raw in ledger.read_bytes().splitlines():
        p = parse_line(raw)
        written[(p.sensor, round(p.value, 2))] += 1
    assert sum(written.values()) == n
    stored = Counter(
        {(s, round(v, 2)): c for s, v, c in system.query("SELECT sensor, value, count(*) FROM readings GROUP BY ALL")}
    )
    assert stored == written, "stored readings differ from the lines the board wrote"
    assert dict(system.query("SELECT detector, count(*) FROM states GROUP BY 1")) == {"dbscan": n, "iforest": n}
    assert system.query("""
        SELECT count(*) FROM readings r WHERE
          (SELECT count(DISTINCT detector) FROM states s WHERE s.session_id = r.session_id AND s.seq = r.seq) <> 2
    """) == [(0,)]


def test_two_workers_share_sensors_and_survive_a_kill(tmp_path, broker):
    n, rate = 2400, 100.0
    ledger = tmp_path / "ledger.txt"
    with System(tmp_path, kafka_env(broker, ledger, n, rate)) as system:
        try:
            # a loaded machine (the suite runs two files at once) can take a while to join the group
            pids = wait_for(
                lambda: found if all(found := [system.pid(f"detector:detector-{i}") for i in (0, 1)]) else None,
                timeout=150,
                what="two detector workers",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{system.ctl('status')}\n{system.log()[-3000:]}") from None
        # Both workers judging, each with one of the two sensors.
        wait_for(
            lambda: (
                all(re.search(r"(humidite|temperature)\[", assigned_pids(system).get(p, "")) for p in pids)
                and count(system, "states") >= 400
            ),
            timeout=90,
            what="both workers holding a sensor and states stored",
        )
        victim = pids[0]
        victim_sensors = set(re.findall(r"(humidite|temperature)\[", assigned_pids(system)[victim]))
        assert victim_sensors and victim_sensors < SENSORS
        before = count(system, "states")
        os.kill(victim, signal.SIGKILL)
        assert before < 2 * n, "the kill must land mid-stream"
        wait_for(lambda: count(system, "states") >= 2 * n, timeout=150, what=f"{2 * n} states after the kill")
        rc = system.stop()
    assert rc == 0, system.log()[-3000:]
    check_stored_once_judged_once(system, ledger, n)
    # The victim's sensors were taken over with their windows rebuilt from history: each sensor
    # has exactly one initializing stretch, the detector's warm-up at the start.
    warmup = detectors.build("dbscan", {"window": 20})[0].warmup
    init = dict(
        system.query(
            "SELECT sensor, count(*) FROM states WHERE detector = 'dbscan' AND state = 'initializing' GROUP BY 1"
        )
    )
    assert init == {"humidite": warmup, "temperature": warmup}
    log = system.log()
    taken = [p for p, parts in assigned_pids(system).items() if p != victim and any(s in parts for s in victim_sensors)]
    assert taken, "no other worker took the killed worker's sensors:\n" + log[-3000:]


def test_broker_outage_loses_nothing(tmp_path, broker):
    n, rate = 3600, 50.0
    ledger = tmp_path / "ledger.txt"
    with System(tmp_path, kafka_env(broker, ledger, n, rate)) as system:
        wait_for(lambda: count(system, "states") > 0, timeout=90, what="states stored")
        lines_before = len(ledger.read_bytes().splitlines())
        broker.stop()
        # 30 s without a broker; the board keeps writing and the producer keeps reading.
        time.sleep(30)
        lines_during = len(ledger.read_bytes().splitlines()) - lines_before
        assert 0 < lines_during and lines_before + lines_during < n, "the outage must land mid-stream"
        # A restarted Tansu with memory storage is empty: no topics, no committed offsets.
        broker.start()
        wait_for(lambda: count(system, "readings") >= n, timeout=150, what=f"{n} readings after the outage")
        # Every reading judged by both detectors, those received during the outage included.
        wait_for(lambda: system.ask("unjudged", 2) == 0, timeout=120, what="every reading judged")
        rc = system.stop()
    assert rc == 0, system.log()[-3000:]
    log = system.log()
    assert "unreachable" in log, "the outage was not reported"
    # The restarted broker had lost what it acknowledged before the stop but consumers had not
    # read yet; the producer's spool noticed and sent it again.
    assert "came back without records it had acknowledged" in log
    check_stored_once_judged_once(system, ledger, n)
