"""End to end, under supervisord: the simulator injects one spike on one sensor; exactly one event
opens, one notification reaches a real webhook receiver with the sensor, time, value, detectors and
a link to the page, the event closes after its quiet period, and one "resolved" notification
follows."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from lib.ingest.simulator import SignalModel, load_scenario
from tests.receivers import WebhookReceiver
from tests.system import System, wait_for

pytestmark = pytest.mark.e2e

# A raw robust z-score (not calibrated: its own score z / (z + 3)) over 50 readings, flagging at 12
# deviations: the injected 60-deviation spikes, and no normal reading.
RAW_ZSCORE = json.dumps({"zscore": {"window": 50, "threshold": 0.8, "calibrate": False}})
RATE = 20.0  # lines/s, two sensors
SCENARIO = """
quiet_s = 8
[sensors.temperature]
base = 21.0
amplitude = 0.0
noise = 0.1
[sensors.humidite]
base = 55.0
amplitude = 0.0
noise = 0.3
[[anomalies]]
kind = "spike"
sensor = "temperature"
every_s = 20
magnitude = 60
"""


def test_one_spike_one_event_one_notification_then_one_resolved(tmp_path):
    scenario = tmp_path / "one-spike.toml"
    scenario.write_text(SCENARIO)
    # The spike's time from the simulator's own model; the board stops 7 s later, before a second
    # spike could come (the next is at least every_s / 2 after).
    spike_s = SignalModel(load_scenario(scenario), seed=42).next_due[0]
    receiver = WebhookReceiver().start()
    env = {
        "VIGIE_SIMULATOR_SCENARIO": str(scenario),
        "VIGIE_SIMULATOR_RATE": str(RATE),
        "VIGIE_SIMULATOR_COUNT": str(int((spike_s + 7) * RATE)),
        "VIGIE_DETECTION_DETECTORS": "zscore",
        "VIGIE_DETECTION_PARAMS": RAW_ZSCORE,
        # no rules: the board stops at the end of the run, and its silence would be an event too
        "VIGIE_DETECTION_RULES": "{}",
        "VIGIE_EVENTS_QUIET_S": "3",
        "VIGIE_ALERTS_CHANNELS": json.dumps({"hook": {"kind": "webhook", "url": receiver.url}}),
        "VIGIE_ALERTS_GROUP_INTERVAL_S": "2",
    }
    try:
        with System(tmp_path, env) as system:
            wait_for(
                lambda: any(n["kind"] == "resolved" for n in receiver.notifications()),
                timeout=120 + spike_s,
                what="the resolved notification",
            )
            # the store files the close from the same topic, on its own write cadence
            # (a running store answers named queries only: the rows are read once it has stopped)
            wait_for(
                lambda: int(system.ask("events")["closed_at"].notna().sum()) == 1,
                timeout=30,
                what="the event closed in the store",
            )
            assert system.stop() == 0, system.log()[-3000:]
            events = system.query(
                "SELECT event_id, sensor, epoch_us(start_ts), start_value, members,"
                " closed_at IS NOT NULL, epoch_us(closed_at) - epoch_us(end_ts) FROM events"
            )
            spike = system.query("SELECT epoch_us(started_at) FROM truth WHERE kind = 'spike'")
            value = system.query(
                "SELECT r.value FROM readings r JOIN events e ON r.session_id = e.session_id AND r.seq = e.start_seq"
            )
    finally:
        receiver.stop()
    ((event_id, sensor, start_us, start_value, members, closed, quiet_us),) = events
    assert sensor == "temperature" and closed and members == "zscore"
    assert quiet_us >= 3_000_000  # closed after the quiet period
    assert len(spike) == 1 and abs(spike[0][0] - start_us) < 500_000  # the event is the injected spike
    opened, resolved = receiver.notifications()
    assert len(receiver.received) == 2  # two messages, nothing else
    assert (opened["kind"], resolved["kind"]) == ("opened", "resolved")
    assert opened["sensor"] == "temperature" and opened["event_id"] == event_id
    assert opened["time_us"] == start_us and opened["value"] == start_value == value[0][0]
    assert opened["detectors"] == ["zscore"]
    assert opened["link"] == f"http://127.0.0.1:{system.app_port}/events?event={quote(event_id, safe='')}"
    assert resolved["event_id"] == event_id and resolved["closed_at"]
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.received]
    assert len(set(keys)) == 2
