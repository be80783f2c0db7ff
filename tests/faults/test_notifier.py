"""The real notifier process (`python -m workers.notifier`) killed with -9 in the middle of a
delivery, then its receiver down for 60 s: every notification arrives, and any message that
arrives twice carries the same idempotency key both times."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from lib.config import PROJECT_ROOT
from lib.detect.events import EventTracker, Policy
from lib.messages import EVENTS, json_message
from lib.transport.embedded import EmbeddedTransport
from tests.receivers import WebhookReceiver
from tests.system import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SENSORS = 6
DOWN_S = 60


def event_messages(now_s: float, sensors) -> list:
    """Each sensor's event: opened, then closed (two notifications each)."""
    out = []
    for k in sensors:
        t = EventTracker(f"s{k}", Policy(quiet_s=1))
        t0 = int((now_s - 30 + k) * 1e6)
        snaps = t.feed("sess", 10, t0, 90.0, {"zscore": 0.9}) + t.feed("sess", 11, t0 + 2_000_000, 20.0, {})
        out += [json_message(EVENTS, f"s{k}", {"type": "event", **e.payload()}) for e in snaps]
    return out


def publish(bus, messages) -> None:
    p = bus.producer()
    p.send(messages)
    p.close()


def deliveries(data) -> list[tuple[str, str]]:
    """(key, state) of every delivery in the notifier's outbox."""
    path = data / "alerts.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT key, state FROM deliveries").fetchall()
    finally:
        conn.close()


def start_notifier(env, log):
    return subprocess.Popen(
        [sys.executable, "-m", "workers.notifier"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_kill_9_mid_delivery_and_a_receiver_down_60s_lose_nothing_and_repeat_only_with_the_same_key(tmp_path):
    data = tmp_path / "data"
    bus = EmbeddedTransport(data / "bus.sqlite")
    publish(bus, event_messages(time.time(), range(2)))
    receiver = WebhookReceiver().start()
    # One message per notification (no grouping), quick retries: the test is about loss and repeats.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(
        VIGIE_PATHS_DATA_DIR=str(data),
        PYTHONUNBUFFERED="1",
        VIGIE_ALERTS_CHANNELS=json.dumps({"hook": {"kind": "webhook", "url": receiver.url}}),
        VIGIE_ALERTS_GROUP_WAIT_S="0",
        VIGIE_ALERTS_GROUP_INTERVAL_S="0",
        VIGIE_ALERTS_RETRY_MAX_S="10",
    )
    log = open(tmp_path / "notifier.log", "wb")
    procs = []
    try:
        receiver.delay_s = 4.0  # the first message is held: the kill lands mid-delivery
        procs.append(start_notifier(env, log))
        assert receiver.arrived.wait(60), (tmp_path / "notifier.log").read_text()
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        in_flight = [k for k, state in deliveries(data) if state != "sent"]
        receiver.stop()  # ... and the receiver goes down for DOWN_S
        receiver.delay_s = 0.0
        down_at = time.monotonic()
        procs.append(start_notifier(env, log))
        publish(bus, event_messages(time.time(), range(2, SENSORS)))  # more events while it is down
        time.sleep(DOWN_S)
        assert procs[1].poll() is None, "the notifier died while the receiver was down"
        assert all(state == "retrying" for _, state in deliveries(data))
        receiver.start()
        back_at = time.monotonic()
        wait_for(
            lambda: (lambda d: d and all(state == "sent" for _, state in d))(deliveries(data)),
            timeout=120,
            what="every delivery sent",
        )
        caught_up = time.monotonic() - back_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
        receiver.stop()
        log.close()
    keys_by_note = defaultdict(set)
    for r in receiver.received:
        for n in r["body"]["notifications"]:
            keys_by_note[n["key"]].add(r["headers"]["Idempotency-Key"])
    expected = {f"sess:s{k}:10|{kind}|hook" for k in range(SENSORS) for kind in ("opened", "resolved")}
    assert set(keys_by_note) == expected, "a notification was lost or one was invented"
    assert all(len(keys) == 1 for keys in keys_by_note.values()), "a notification came again under a new key"
    repeats = len(receiver.received) - len({r["headers"]["Idempotency-Key"] for r in receiver.received})
    # The message cut by the kill had reached the receiver: it came again, under the same key.
    assert len(in_flight) == 1 and repeats == 1
    assert sum(1 for r in receiver.received if r["headers"]["Idempotency-Key"] == in_flight[0]) == 2
    text = (tmp_path / "notifier.log").read_text()
    assert "failed (URLError" in text and "Connection refused" in text
    print(
        f"\nFAULT notifier: kill -9 mid-delivery, receiver down {DOWN_S}s ({time.monotonic() - down_at:.0f}s"
        f" in all): {len(expected)} notifications, {len(receiver.received)} messages received, {repeats}"
        f" repeated with their key; caught up {caught_up:.1f}s after the receiver came back"
    )
