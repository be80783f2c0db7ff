"""The Events view (Streamlit's AppTest) on the prepared database, its events made by the real
tracker (lib.detect.events) from the prepared verdicts: open first, filters, a spreadsheet-safe
CSV, and an acknowledgement with labels that reaches DuckDB through the transport and the store."""

from collections import defaultdict

from streamlit.testing.v1 import AppTest

from lib.alerts import outbox
from lib.alerts.notifier import outbox_path
from lib.alerts.settings import load_alerts
from lib.config import PROJECT_ROOT, load_config
from lib.detect.events import EventTracker, Policy
from lib.page import views
from lib.store.batch import Batch
from lib.store.reader import read_db
from lib.store.writer import write_batch
from tests.appdata import prepare
from tests.test_app import downloads  # noqa: F401 - the fixture that serves the download buttons
from tests.test_app_labels import store_until_drained


def prepare_with_events(config) -> dict:
    """The prepared data, then its events: every reading with its verdicts through one tracker
    per sensor (quiet period 5 s), as the detector worker would have done."""
    info = prepare(config.db_path)
    with read_db(config.db_path) as conn:
        rows = conn.execute("""
            SELECT r.session_id, r.seq, r.sensor, epoch_us(r.ts), r.value,
                   list(s.detector) FILTER (WHERE s.state = 'anomaly'), list(s.score) FILTER (WHERE s.state = 'anomaly')
            FROM readings r JOIN states s USING (session_id, seq)
            GROUP BY ALL ORDER BY r.sensor, epoch_us(r.ts), r.seq""").fetchall()
    trackers = defaultdict(lambda: None)
    batch = Batch()
    for session, seq, sensor, ts, value, dets, scores in rows:
        if trackers[sensor] is None:
            trackers[sensor] = EventTracker(sensor, Policy(quiet_s=5))
        for ev in trackers[sensor].feed(session, seq, ts, value, dict(zip(dets or [], scores or []))):
            batch.events[ev.id] = {"type": "event", **ev.payload()}
    write_batch(config.db_path, batch)
    info["events"] = len(batch.events)
    info["first"] = next(iter(batch.events.values()))
    info["open"] = sum(1 for e in batch.events.values() if e["closed_ts_us"] is None)
    return info


def events_view(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page("views/events.py").run()
    assert not at.exception, at.exception
    return at


def table(at):
    return next(d.value for d in at.dataframe if "event_id" in d.value.columns)


def failed_delivery(config, event: dict) -> None:
    """The notifier's outbox with one message that failed for good."""
    settings = load_alerts(
        load_config(
            env={}, overrides={"alerts": {"channels": {"hook": {"kind": "webhook", "url": "http://127.0.0.1:9/x"}}}}
        ),
        env={},
    )
    conn = outbox.connect(outbox_path(config))
    with outbox.transaction(conn):
        outbox.Planner(conn, settings, clock=lambda: event["start_ts_us"] / 1e6).add(event)
    (key,), _ = outbox.group_due(conn, settings, event["start_ts_us"] / 1e6 + 1)
    outbox.record_failure(conn, key, "HTTP 401 Unauthorized", None)
    conn.close()


def test_events_are_listed_open_first_filtered_and_exported_safely(downloads):  # noqa: F811
    config = load_config()
    info = prepare_with_events(config)
    assert info["events"] > 20 and info["open"] >= 1
    failed_delivery(config, info["first"])
    at = events_view()
    assert "1 message(s) failed" in at.warning[0].value
    rows = table(at)
    assert len(rows) == info["events"]
    resolved = list(rows["state"] == "resolved")
    assert resolved == sorted(resolved), "an open event is listed after a resolved one"
    hostile = [i for i, s in enumerate(rows["sensor"]) if s == "=cmd|' /C calc'!A0"]
    assert len(hostile) == 1 and rows.iloc[hostile[0]]["state"] == "open"
    exported = downloads(at, "download_events")
    assert len(exported) == len(rows) and exported[hostile[0]]["sensor"] == "'=cmd|' /C calc'!A0"
    assert [r["event_id"] for r in exported] == list(rows["event_id"])
    at.multiselect(key="ev_severity").select("critical").run()
    critical = table(at)
    assert 0 < len(critical) < len(rows) and set(critical["severity"]) == {"critical"}
    at.multiselect(key="ev_states").select("open").run()
    assert list(table(at)["event_id"]) == [
        e for e, s, sev in rows[["event_id", "state", "severity"]].values if s == "open" and sev == "critical"
    ]
    # the page title carries the count of events not resolved
    assert views.page_title(info["open"]) == f"({info['open']}) Vigie"


def test_acknowledging_a_linked_event_as_a_false_alarm_labels_its_readings(tmp_path):
    config = load_config()
    prepare_with_events(config)
    with read_db(config.db_path) as conn:
        event_id, n_flagged = conn.execute(
            "SELECT event_id, n_flagged FROM events WHERE closed_at IS NOT NULL AND n_flagged >= 2"
            " ORDER BY start_ts LIMIT 1"
        ).fetchone()
    at = events_view({"event": event_id})
    assert list(table(at)["event_id"]) == [event_id]
    at.button(key="ev_ack_rejected").click().run()
    assert "say who you are" in at.error[0].value
    at.text_input(key="ev_who").input("ana")
    at.text_input(key="ev_note").input("=1+1 valve test")
    at.button(key="ev_ack_rejected").click().run()
    assert not at.exception and "1 event(s) acknowledged" in at.success[0].value
    store_until_drained(config)
    with read_db(config.db_path) as conn:
        acked = conn.execute(
            "SELECT acked_by, ack_note, resolved_by FROM events WHERE event_id = ?", [event_id]
        ).fetchall()
        labels = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE l.verdict = 'rejected') FROM labels l JOIN events e
              ON l.sensor = e.sensor AND l.ts BETWEEN e.start_ts AND e.end_ts WHERE e.event_id = ?
              AND l.note = '=1+1 valve test'""",
            [event_id],
        ).fetchone()
    assert acked == [("ana", "=1+1 valve test", None)]
    assert labels == (n_flagged, n_flagged)
    at.button(key="ev_resolve").click().run()
    store_until_drained(config)
    with read_db(config.db_path) as conn:
        assert conn.execute("SELECT resolved_by FROM events WHERE event_id = ?", [event_id]).fetchone() == ("ana",)
