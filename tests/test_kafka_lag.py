"""The Kafka transport's backlog for the page's health view, against a real Tansu broker on
127.0.0.1: per consumer group, the records it has not committed; 0 once it has caught up; a
broker away is an error the panel shows, quickly, not a stalled page."""

from __future__ import annotations

import dataclasses
import time

import pytest

from lib.config import load_config
from lib.page import health
from lib.transport.kafkabus import lag
from tests.test_kafka_batches import consume, kafka_config, produce, readings, transport

SENSORS = ("lag-a", "lag-b", "lag-c")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Every call measures (the page's reuse of an answer for a few seconds is tested apart)."""
    monkeypatch.setattr(lag, "MAX_AGE_S", 0.0)


def test_each_group_owes_the_records_it_has_not_committed_and_none_once_caught_up(broker, tmp_path):
    kt = transport(broker, tmp_path)
    produce(kt, [readings(SENSORS, 25, i * 25) for i in range(8)])  # 8 records of 25 per sensor
    first = kt.consumer("lagging", sensors=True)
    try:
        part = consume(first, 1, max_records=60)
        first.commit()
    finally:
        first.close()
    taken = len(part) // 25  # whole records
    assert 0 < taken < 24
    assert kt.backlog()["lagging"] == 24 - taken

    second = kt.consumer("lagging", sensors=True)
    try:
        consume(second, 600 - len(part))
        second.commit()
    finally:
        second.close()
    assert kt.backlog()["lagging"] == 0

    # through the health panel, as the page reads it (it opens the configured transport itself):
    # counted in records, a big lag in a sentence
    found = health.check(kafka_config(broker, tmp_path))
    assert (found.backlog["lagging"], found.backlog_unit, found.backlog_error) == (0, "records", None)
    behind = dataclasses.replace(found, backlog={"lagging": health.BACKLOG_WARN})
    assert health.problems(behind) == [f"**lagging** is {health.BACKLOG_WARN:,} records behind on the transport"]


def test_a_broker_away_is_an_error_on_the_panel_within_seconds_and_not_asked_again_each_refresh(
    broker, tmp_path, monkeypatch
):
    kt = transport(broker, tmp_path)
    broker.stop()
    t0 = time.monotonic()
    down = health.check(load_config(), transport=kt)
    took = time.monotonic() - t0
    assert down.backlog is None and down.backlog_error, down
    assert took < 30, f"{took:.1f} s"  # kafka-python's own retries, bounded by the short timeouts

    monkeypatch.setattr(lag, "MAX_AGE_S", 60.0)
    calls = []
    monkeypatch.setattr(lag, "_measure", lambda clients: calls.append(1) or {"g": 3})
    lag._last.clear()
    assert [kt.backlog(), kt.backlog()] == [{"g": 3}, {"g": 3}] and len(calls) == 1
