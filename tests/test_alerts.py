"""Notifications (lib/alerts): settings and secrets, what is told when, grouping, and delivery to
real receivers (an HTTP server for webhooks, aiosmtpd with STARTTLS and a login for e-mail)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime

import pytest

from lib.alerts import outbox
from lib.alerts.notifier import Notifier, retry_wait
from lib.alerts.settings import AlertsConfigError, load_alerts
from lib.config import load_config
from lib.detect.events import EventTracker, Policy
from lib.messages import EVENTS, json_message
from lib.transport.embedded import EmbeddedTransport
from tests.receivers import SmtpReceiver, WebhookReceiver

S = 1_000_000
T0 = 1_700_000_000


def settings_for(channels: dict, env: dict | None = None, **alerts):
    config = load_config(env={}, overrides={"alerts": {"channels": channels, **alerts}})
    return load_alerts(config, env=env or {})


class Clock:
    def __init__(self, t: float = T0 + 100):
        self.t = t

    def __call__(self) -> float:
        return self.t


def spike_events(sensor="temp", start_s=100.0, extra_flags=()):
    """The three snapshots of one event: opened by one detector (warning), escalated when a
    second agrees (critical), closed."""
    t = EventTracker(sensor, Policy(quiet_s=2))
    snaps = t.feed("sess", 1, int((T0 + start_s - 1) * S), 20.0, {})
    snaps += t.feed("sess", 2, int((T0 + start_s) * S), 60.0, {"dbscan": 0.9})
    snaps += t.feed("sess", 3, int((T0 + start_s + 0.5) * S), 65.0, {"dbscan": 0.9, "iforest": 0.8})
    snaps += t.feed("sess", 4, int((T0 + start_s + 3) * S), 20.0, {})
    return [{"type": "event", **e.payload()} for e in snaps]


# -- settings and secrets ----------------------------------------------------------------------


def test_secrets_come_from_the_environment_or_a_private_file_never_the_config(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("tok-123\n")
    secret.chmod(0o644)
    hook = {"kind": "webhook", "url": "http://127.0.0.1:1/x"}
    with pytest.raises(AlertsConfigError, match="readable by others .*chmod 600") as exc:
        settings_for({"h": {**hook, "token_file": str(secret)}})
    assert "tok-123" not in str(exc.value)
    secret.chmod(0o600)
    s = settings_for({"h": {**hook, "token_file": str(secret)}})
    assert s.channels["h"].token == "tok-123" and "tok-123" not in repr(s)
    assert settings_for({"h": {**hook, "token_env": "HOOK_TOKEN"}}, env={"HOOK_TOKEN": "e"}).channels["h"].token == "e"
    with pytest.raises(AlertsConfigError, match="environment has no HOOK_TOKEN"):
        settings_for({"h": {**hook, "token_env": "HOOK_TOKEN"}})
    with pytest.raises(AlertsConfigError, match="password: a secret does not belong"):
        settings_for(
            {"m": {"kind": "email", "host": "h", "from": "a@b", "to": ["c@d"], "username": "u", "password": "p"}}
        )
    for bad, words in [
        ({"kind": "pager"}, "kind: must be one of"),
        ({**hook, "format": "teams"}, "format"),
        ({**hook, "format": "ntfy"}, "needs a topic"),
        ({**hook, "colour": 1}, "unknown key.s. colour"),
    ]:
        with pytest.raises(AlertsConfigError, match=words):
            settings_for({"h": bad})
    with pytest.raises(AlertsConfigError, match="no channel named nope"):
        settings_for({"h": hook}, routes={"r": {"channels": ["nope"]}})


def test_routes_pick_channels_per_sensor_and_severity():
    hook = {"kind": "webhook", "url": "http://127.0.0.1:1/x"}
    s = settings_for(
        {"all": hook, "boss": hook, "temp": hook},
        routes={
            "r1": {"channels": ["all"]},
            "r2": {"channels": ["boss"], "min_severity": "critical"},
            "r3": {"channels": ["temp"], "sensors": ["temp"]},
        },
    )
    assert s.channels_for("temp", "warning") == ["all", "temp"]
    assert s.channels_for("hum", "critical") == ["all", "boss"]


# -- what is told when -------------------------------------------------------------------------


def planned(tmp_path, settings, payloads, clock=None, local_now=None):
    conn = outbox.connect(tmp_path / "alerts.sqlite")
    planner = outbox.Planner(conn, settings, clock or Clock(), local_now)
    with outbox.transaction(conn):
        for p in payloads:
            planner.add(p)
    return conn, [
        (k, c, kind, sev, held)
        for k, c, kind, sev, held in conn.execute(
            "SELECT key, channel, kind, severity, held FROM notifications ORDER BY rowid"
        )
    ]


def test_one_notification_on_open_one_on_escalation_one_on_resolve_and_replays_add_none(tmp_path):
    s = settings_for({"h": {"kind": "webhook", "url": "http://127.0.0.1:1/x"}})
    snaps = spike_events()
    conn, rows = planned(tmp_path, s, snaps + snaps)  # every message twice: a replay
    assert [(kind, sev) for _, _, kind, sev, _ in rows] == [
        ("opened", "warning"),
        ("escalated", "critical"),
        ("resolved", "critical"),
    ]
    assert rows[0][0] == "sess:temp:2|opened|h"


def test_an_operator_resolution_is_told_once_and_the_later_close_adds_nothing(tmp_path):
    s = settings_for({"h": {"kind": "webhook", "url": "http://127.0.0.1:1/x"}})
    snaps = spike_events()
    action = {
        "type": "action",
        "event_id": "sess:temp:2",
        "action": "resolve",
        "by": "ana",
        "note": "valve",
        "made_us": (T0 + 101) * S,
    }
    conn, rows = planned(tmp_path, s, snaps[:2] + [action] + snaps[2:])
    assert [kind for _, _, kind, _, _ in rows] == ["opened", "escalated", "resolved"]
    body = json.loads(conn.execute("SELECT body FROM notifications WHERE kind = 'resolved'").fetchone()[0])
    assert (body["by"], body["note"]) == ("ana", "valve")


def test_minimum_severity_and_quiet_hours_hold_back_what_is_not_urgent(tmp_path):
    hook = {"kind": "webhook", "url": "http://127.0.0.1:1/x"}
    s = settings_for({"h": hook}, min_severity="critical")
    _, rows = planned(tmp_path / "a", s, spike_events())
    # the critical route hears of the event first when it turns critical, then its resolution
    assert [(kind, sev) for _, _, kind, sev, _ in rows] == [("opened", "critical"), ("resolved", "critical")]
    night = lambda: datetime(2026, 1, 1, 23, 30)  # noqa: E731
    s = settings_for({"h": hook}, quiet_hours="22:00-07:00")
    _, rows = planned(tmp_path / "b", s, spike_events()[:1], local_now=night)
    assert [(kind, held) for _, _, kind, _, held in rows] == [("opened", "quiet hours")]
    _, rows = planned(tmp_path / "c", s, spike_events(), local_now=night)
    # held back while it was a warning; released as the operator's first message once critical
    assert [(kind, sev, held) for _, _, kind, sev, held in rows] == [
        ("opened", "critical", None),
        ("resolved", "critical", None),
    ]


def test_quiet_hours_are_the_operators_hours_in_app_timezone(tmp_path):
    """The event opens at 22:15 UTC (T0 + 100 s): 23:15 in Paris, inside "22:00-07:00", held back;
    17:15 in New York, outside, sent."""
    hook = {"kind": "webhook", "url": "http://127.0.0.1:1/x"}
    held = {}
    for zone in ("Europe/Paris", "America/New_York"):
        config = load_config(
            env={},
            overrides={"alerts": {"channels": {"h": hook}, "quiet_hours": "22:00-07:00"}, "app": {"timezone": zone}},
        )
        settings = load_alerts(config, env={})
        _, rows = planned(tmp_path / zone.replace("/", "-"), settings, spike_events()[:1], local_now=None)
        held[zone] = [h for *_, h in rows]
    assert held == {"Europe/Paris": ["quiet hours"], "America/New_York": [None]}


# -- grouping and delivery ---------------------------------------------------------------------


@pytest.fixture
def webhook():
    r = WebhookReceiver().start()
    yield r
    r.stop()


def test_a_storm_is_one_message_per_channel_per_interval(tmp_path, webhook):
    s = settings_for({"h": {"kind": "webhook", "url": webhook.url}}, group_wait_s=0.5, group_interval_s=60)
    clock = Clock()
    n = Notifier(s, tmp_path / "alerts.sqlite", consumer=None, clock=clock)
    with outbox.transaction(n.intake_conn):
        for k in range(12):
            n.planner.add(spike_events(f"s{k:02d}")[1])  # twelve sensors open at once
    assert n.deliver_once() == pytest.approx(clock.t + 0.5)  # gathering for group_wait_s
    clock.t += 0.5
    n.deliver_once()
    assert len(webhook.received) == 1 and len(webhook.notifications()) == 12
    with outbox.transaction(n.intake_conn):
        n.planner.add(spike_events("late")[1])
    clock.t += 30
    assert n.deliver_once() == pytest.approx(clock.t + 30)  # one message a minute at most
    clock.t += 30
    n.deliver_once()
    assert [len(r["body"]["notifications"]) for r in webhook.received] == [12, 1]
    keys = [r["headers"]["Idempotency-Key"] for r in webhook.received]
    assert len(set(keys)) == 2 and keys == [r["body"]["idempotency_key"] for r in webhook.received]
    n.close()


@pytest.mark.parametrize("fmt", ["json", "slack", "ntfy"])
def test_webhook_payloads_carry_sensor_time_value_detectors_and_a_link(tmp_path, webhook, fmt, monkeypatch, caplog):
    monkeypatch.setenv("HOOK_TOKEN", "tok-secret-42")
    chan = {
        "kind": "webhook",
        "url": webhook.url,
        "format": fmt,
        "token_env": "HOOK_TOKEN",
        **({"topic": "plant"} if fmt == "ntfy" else {}),
    }
    s = settings_for({"h": chan}, env=dict(os.environ), group_wait_s=0, page_url="http://vigie.local:8501")
    n = Notifier(s, tmp_path / "alerts.sqlite", consumer=None, clock=Clock())
    with outbox.transaction(n.intake_conn):
        n.planner.add(spike_events()[1])
    with caplog.at_level(logging.DEBUG, logger="lib.alerts"):
        n.deliver_once()
    (got,) = webhook.received
    assert got["headers"]["Authorization"] == "Bearer tok-secret-42" and got["headers"]["Idempotency-Key"]
    body = got["body"]
    link = "http://vigie.local:8501/events?event=sess%3Atemp%3A2"
    if fmt == "json":
        (note,) = body["notifications"]
        assert (note["sensor"], note["value"], note["peak_value"], note["detectors"], note["severity"]) == (
            "temp",
            60.0,
            65.0,
            ["dbscan", "iforest"],
            "critical",
        )
        assert note["time"] == "2023-11-14 22:15:00 UTC" and note["link"] == link
    elif fmt == "slack":
        text = body["blocks"][0]["text"]["text"]
        assert "temp" in body["text"] and "2023-11-14 22:15:00 UTC" in text and "value 60" in text
        assert "dbscan, iforest" in text and link in text
    else:
        assert body["topic"] == "plant" and body["priority"] == 5 and body["click"] == link
        assert "value 60" in body["message"] and "dbscan, iforest" in body["message"]
    assert "tok-secret-42" not in caplog.text
    n.close()


def test_a_receiver_that_is_down_gets_it_later_once_and_a_refusal_fails_with_its_reason(tmp_path, webhook):
    s = settings_for({"h": {"kind": "webhook", "url": webhook.url}}, group_wait_s=0, retry_max_s=8)
    clock = Clock()
    n = Notifier(s, tmp_path / "alerts.sqlite", consumer=None, clock=clock)
    webhook.stop()
    with outbox.transaction(n.intake_conn):
        n.planner.add(spike_events()[1])
    waits = []
    for _ in range(5):
        due = n.deliver_once()
        waits.append(round(due - clock.t))
        clock.t = due
    assert waits == [1, 2, 4, 8, 8] == [retry_wait(k, 8) for k in range(1, 6)]
    state = outbox.delivery_states(tmp_path / "alerts.sqlite")
    assert state[0][6] == "retrying" and "Connection refused" in state[0][8]
    webhook.start()
    n.deliver_once()
    assert len(webhook.received) == 1
    assert outbox.delivery_states(tmp_path / "alerts.sqlite")[0][6:8] == ("sent", 6)
    webhook.status = 401
    with outbox.transaction(n.intake_conn):
        n.planner.add(spike_events("other")[1])
    clock.t += 60
    n.deliver_once()
    failed = [r for r in outbox.delivery_states(tmp_path / "alerts.sqlite") if r[6] == "failed"]
    assert len(failed) == 1 and failed[0][8] == "HTTP 401 Unauthorized" and failed[0][7] == 1
    n.close()


def test_email_over_starttls_with_a_login(tmp_path, monkeypatch, caplog):
    smtp = SmtpReceiver(tmp_path).start()
    try:
        monkeypatch.setenv("SMTP_PASSWORD", "s3cret-smtp")
        chan = {
            "kind": "email",
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "starttls",
            "username": "vigie",
            "password_env": "SMTP_PASSWORD",
            "from": "vigie@plant.example",
            "to": ["ops@plant.example"],
            "ca_file": str(smtp.cert),
        }
        s = settings_for({"mail": chan}, env=dict(os.environ), group_wait_s=0)
        n = Notifier(s, tmp_path / "alerts.sqlite", consumer=None, clock=Clock())
        with outbox.transaction(n.intake_conn):
            n.planner.add(spike_events()[1])
        with caplog.at_level(logging.DEBUG, logger="lib.alerts"):
            n.deliver_once()
        (msg,) = smtp.messages
        assert smtp.logins == ["vigie"]
        key = outbox.delivery_states(tmp_path / "alerts.sqlite")[0][10]
        assert msg["Message-ID"] == f"<{key}@vigie>" and msg["To"] == "ops@plant.example"
        text = msg.get_payload(decode=True).decode()
        assert "temp" in msg["Subject"] and "value 60" in text and "/events?event=sess%3Atemp%3A2" in text
        # a wrong password is refused for good, and the password never reaches the logs or the outbox
        bad = settings_for({"mail": {**chan, "password_env": "WRONG"}}, env={"WRONG": "nope"}, group_wait_s=0)
        m = Notifier(bad, tmp_path / "other.sqlite", consumer=None, clock=Clock())
        with outbox.transaction(m.intake_conn):
            m.planner.add(spike_events()[1])
        m.deliver_once()
        assert outbox.delivery_states(tmp_path / "other.sqlite")[0][6:9] == ("failed", 1, "SMTP login refused (535)")
        assert "s3cret-smtp" not in caplog.text
        assert b"s3cret-smtp" not in (tmp_path / "alerts.sqlite").read_bytes()
        n.close()
        m.close()
    finally:
        smtp.stop()


def test_intake_from_the_transport_commits_only_what_is_filed(tmp_path, webhook):
    bus = EmbeddedTransport(tmp_path / "bus.sqlite")
    p = bus.producer()
    p.send([json_message(EVENTS, "temp", m) for m in spike_events()])
    p.close()
    s = settings_for({"h": {"kind": "webhook", "url": webhook.url}}, group_wait_s=0)
    consumer = bus.consumer("notifier", topics=[EVENTS])
    n = Notifier(s, tmp_path / "alerts.sqlite", consumer, clock=Clock())
    assert n.intake_once(0.5) == 3
    consumer.close()
    # a second notifier on the same outbox and group reads nothing again
    consumer = bus.consumer("notifier", topics=[EVENTS])
    n2 = Notifier(s, tmp_path / "alerts.sqlite", consumer, clock=Clock())
    assert n2.intake_once(0.1) == 0
    n2.deliver_once()
    assert [x["kind"] for x in webhook.notifications()] == ["opened", "escalated", "resolved"]
    consumer.close()
    n.close()
    n2.close()
