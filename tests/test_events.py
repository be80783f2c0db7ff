"""Anomaly events (lib.detect.events): one run of flagged readings on one sensor is one event.

The tracker alone (tables of flags in, events out; any chunking gives the same events), then the
real detector loop, embedded log and DuckDB store in-process: events stored once, upserted by
id, an event open across a worker restart stays one event, operators' actions filed."""

from __future__ import annotations

import pickle
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.config import load_config
from lib.detect.detection import Judge, run_detector
from lib.detect.events import Event, EventBook, EventTracker, Policy, open_events, policy_for
from lib.messages import EVENTS, INTERNAL, json_message, reading_message
from lib.store.reader import read_db
from lib.store.schema import init_db
from lib.store.sink import run_store
from lib.transport.embedded import EmbeddedTransport

S = 1_000_000  # microseconds in a second


def feed_all(tracker: EventTracker, flags: list[dict], dt_s: float = 1.0, session: str = "s1") -> list[Event]:
    """Feed readings 1..n (one per `dt_s`, value = seq) one at a time; every snapshot returned."""
    out = []
    for i, f in enumerate(flags):
        out += tracker.feed(session, i + 1, int(i * dt_s * S), float(i + 1), f)
    return out


def finals(snapshots: list[Event]) -> dict[str, Event]:
    last: dict[str, Event] = {}
    for ev in snapshots:
        last[ev.id] = ev
    return last


D, F, R = {"dbscan": 0.9}, {"iforest": 0.7}, {"rule:range": 1.0}


@pytest.mark.parametrize(
    "flags, policy, expected",
    [
        # a run of flags with a gap shorter than the quiet period is one event
        ([{}, D, {}, D, {}, {}, {}, {}], Policy(quiet_s=3), [("s1:t:2", 2, 4, 2, True)]),
        # a gap of the quiet period splits it in two
        ([{}, D, {}, {}, {}, D, {}, {}, {}], Policy(quiet_s=3), [("s1:t:2", 2, 2, 1, True), ("s1:t:6", 6, 6, 1, True)]),
        # two detectors must agree: one alone opens nothing, a rule always counts
        (
            [D, F, {**D, **F}, {}, R, {}],
            Policy(quiet_s=0.5, min_agree=2),
            [("s1:t:3", 3, 3, 1, True), ("s1:t:5", 5, 5, 1, True)],
        ),
        # seconds and a count, both: 3 s pass after one reading at 10 s each, but 2 readings are needed
        ([D, {}, {}, {}], Policy(quiet_s=3, quiet_n=2), [("s1:t:1", 1, 1, 1, True)]),
        # still open at the end
        ([{}, D, D], Policy(quiet_s=30), [("s1:t:2", 2, 3, 2, False)]),
    ],
)
def test_flag_tables_give_the_expected_events(flags, policy, expected):
    dt = 10.0 if policy.quiet_n == 2 else 1.0
    events = finals(feed_all(EventTracker("t", policy), flags, dt))
    assert [(e.id, e.start_seq, e.end_seq, e.n_flagged, e.closed) for e in events.values()] == expected
    if policy.quiet_n == 2:  # closed at the second unflagged reading, not the first
        assert events["s1:t:1"].closed_ts_us == 2 * int(dt * S)


def test_peak_members_and_a_severity_that_only_rises():
    t = EventTracker("t", Policy(quiet_s=2))
    snaps = feed_all(t, [{"dbscan": 0.6}, {"dbscan": 0.95, "iforest": 0.7}, {"iforest": 0.8}, {}, {}, {}])
    first, *_, last = snaps
    assert first.severity == "warning" and first.rev == 1
    assert (last.peak_seq, last.peak_value, last.peak_score) == (2, 2.0, 0.95)
    assert last.members == ("dbscan", "iforest") and last.max_agree == 2
    assert last.severity == "critical" and last.closed and last.closed_ts_us == 4 * S
    assert [s.rev for s in snaps] == list(range(1, len(snaps) + 1))


def test_severity_from_a_rule_or_the_score_per_sensor():
    config = load_config(
        env={},
        overrides={
            "events": {
                "severity_from": ["rule"],
                "critical_rules": ["stuck"],
                "sensors": {"p": {"severity_from": ["score"], "critical_score": 0.9}},
            }
        },
    )
    t = EventTracker("t", policy_for(config, "t"))
    assert feed_all(t, [{"dbscan": 0.99, "iforest": 0.99}])[-1].severity == "warning"
    assert feed_all(EventTracker("t", policy_for(config, "t")), [{"rule:stuck": 1.0}])[-1].severity == "critical"
    assert feed_all(EventTracker("p", policy_for(config, "p")), [{"dbscan": 0.95}])[-1].severity == "critical"


def test_a_bad_events_key_stops_start_up_naming_it():
    from lib.config import ConfigError
    from lib.detect.detection import check_detection_config

    for bad, words in [
        ({"sensors": {"p": {"quiet": 3}}}, "[events.sensors.p]: unknown key(s) quiet"),
        ({"base_severity": "loud"}, "base_severity: must be one of"),
        ({"severity_from": ["mood"]}, "unknown source(s) mood"),
    ]:
        with pytest.raises(ConfigError, match=None) as exc:
            check_detection_config(load_config(env={}, overrides={"events": bad}))
        assert words in str(exc.value)


def test_a_silence_keeps_the_event_open_until_readings_return_then_the_quiet_period_counts():
    t = EventTracker("t", Policy(quiet_s=2))
    assert feed_all(t, [{}, {}]) == []
    (opened,) = t.silence("s1", 2, 1 * S)
    assert not opened.closed and opened.silent and opened.members == ("rule:no_data",)
    assert opened.severity == "critical" and opened.start_value is None
    assert t.tick(100 * S) == []  # silent: time alone does not close it
    (back,) = t.feed("s1", 3, 100 * S, 3.0, {})  # the first reading ends the silence
    assert not back.silent and back.end_ts_us == 100 * S and not back.closed
    assert t.feed("s1", 4, 101 * S, 4.0, {}) == []
    (closed,) = t.feed("s1", 5, 102 * S, 5.0, {})
    assert closed.id == opened.id and closed.closed_ts_us == 102 * S


def test_tick_closes_an_event_on_a_sensor_that_stopped_without_a_no_data_rule():
    t = EventTracker("t", Policy(quiet_s=5))
    feed_all(t, [D])
    assert t.tick(4 * S) == []
    (ev,) = t.tick(9 * S)
    assert ev.closed_ts_us == 5 * S and t.current is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([{}, {}, {}, D, F, {**D, **F}, R]), min_size=1, max_size=60),
    st.lists(st.integers(1, 7), min_size=1, max_size=30),
    st.sampled_from([Policy(quiet_s=2.5), Policy(quiet_s=0, quiet_n=3, min_agree=2), Policy(quiet_s=1, quiet_n=2)]),
)
def test_any_chunking_gives_the_same_events_as_one_reading_at_a_time(flags, cuts, policy):
    one = finals(feed_all(EventTracker("t", policy), flags))
    t = EventTracker("t", policy)
    got, at, k = [], 0, 0
    names = sorted({n for f in flags for n in f})
    while at < len(flags):
        part = flags[at : at + cuts[k % len(cuts)]]
        judged = {n: ("".join("a" if n in f else "n" for f in part), [f.get(n, 0.1) for f in part]) for n in names}
        got += t.feed_columns(
            "s1",
            list(range(at + 1, at + len(part) + 1)),
            [int(i * S) for i in range(at, at + len(part))],
            [float(i + 1) for i in range(at, at + len(part))],
            judged,
        )
        at += len(part)
        k += 1
    chunked = finals(got)
    strip = lambda evs: {i: {**e.payload(), "rev": None} for i, e in evs.items()}  # noqa: E731
    assert strip(chunked) == strip(one)


def test_a_tracker_pickles_with_its_open_event():
    t = EventTracker("t", Policy(quiet_s=2))
    feed_all(t, [D])
    u = pickle.loads(pickle.dumps(t))
    assert u.feed("s1", 9, 10 * S, 9.0, {})[0].closed and u.current is None


# -- through the real detector loop, embedded log and store --------------------------------------


def _config(tmp_path, **events):
    return load_config(
        env={},
        overrides={
            "paths": {"data_dir": str(tmp_path / "data")},
            "detection": {"detectors": [], "rules": {"*": {"max": 50}}},
            "events": {"quiet_s": 2.0, **events},
        },
    )


def _send_readings(transport, values, start_seq=1, t0_us=1_700_000_000 * S, session="sess"):
    p = transport.producer()
    p.send(
        [
            reading_message("temp", f"{v}", session, start_seq + i, t0_us + (start_seq + i) * S // 2)
            for i, v in enumerate(values)
        ]
    )
    p.close()


def _detect(transport, config, n, restore=None):
    consumer = transport.consumer("detectors", sensors=True)
    try:
        judge = Judge(config, EventBook(config, restore))
        return run_detector(judge, consumer, threading.Event(), count=n, poll_timeout=0.05)
    finally:
        consumer.close()


def _store(transport, db):
    consumer = transport.consumer("store", topics=INTERNAL, sensors=True)
    stop = threading.Event()
    stop.set()
    try:
        return run_store(db, consumer, stop, flush_interval=0.05)
    finally:
        consumer.close()


def _events(db):
    with read_db(db) as conn:
        return conn.execute(
            "SELECT event_id, start_seq, end_seq, n_flagged, peak_value, members, severity,"
            " closed_at IS NOT NULL, rev FROM events ORDER BY start_seq"
        ).fetchall()


def test_an_event_open_across_a_worker_restart_stays_one_event(tmp_path):
    config = _config(tmp_path)
    transport = EmbeddedTransport(config.bus_path)
    init_db(config.db_path)

    def restore(sensors):
        with read_db(config.db_path) as conn:
            return open_events(conn, sensors)

    # readings every 0.5 s: a run of 3 high ones, then the worker stops mid-event
    _send_readings(transport, [20, 21, 60, 70, 65])
    assert _detect(transport, config, 5, restore) == 5
    _store(transport, config.db_path)
    assert _events(config.db_path) == [("sess:temp:3", 3, 5, 3, 70.0, "rule:range", "critical", False, 1)]
    # a new worker (the restart): two more high readings, then 2 s of quiet close it
    _send_readings(transport, [80, 20, 20, 20, 20, 20], start_seq=6)
    assert _detect(transport, config, 6, restore) == 6
    _store(transport, config.db_path)
    rows = _events(config.db_path)
    assert [r[:8] for r in rows] == [("sess:temp:3", 3, 6, 4, 80.0, "rule:range", "critical", True)]
    # Without the store's open events, the new worker would have opened a second event at seq 6.


def test_replayed_and_late_snapshots_never_take_an_event_back_and_actions_are_filed(tmp_path):
    config = _config(tmp_path)
    transport = EmbeddedTransport(config.bus_path)
    init_db(config.db_path)
    t = EventTracker("temp", Policy(quiet_s=2))
    t.feed("sess", 2, 9 * S, 20.0, {})
    first = t.feed("sess", 3, 10 * S, 60.0, {"rule:range": 1.0})
    second = t.feed("sess", 4, 11 * S, 70.0, {"rule:range": 1.0})
    closed = t.feed("sess", 9, 20 * S, 20.0, {})
    p = transport.producer()
    msgs = [json_message(EVENTS, "temp", {"type": "event", **e.payload()}) for e in first + second + closed]
    p.send(msgs + msgs[:2])  # the first two again, after the close (a replay)
    p.send(
        [
            json_message(
                EVENTS,
                None,
                {
                    "type": "action",
                    "event_id": "sess:temp:3",
                    "action": "ack",
                    "by": "ana",
                    "note": "pump",
                    "made_us": 30 * S,
                },
            ),
            json_message(
                EVENTS,
                None,
                {
                    "type": "action",
                    "event_id": "sess:temp:3",
                    "action": "resolve",
                    "by": "ana",
                    "note": None,
                    "made_us": 31 * S,
                },
            ),
        ]
    )
    p.close()
    _store(transport, config.db_path)
    assert [r[:8] for r in _events(config.db_path)] == [("sess:temp:3", 3, 4, 2, 70.0, "rule:range", "critical", True)]
    with read_db(config.db_path) as conn:
        assert conn.execute("SELECT acked_by, ack_note, resolved_by, epoch_us(resolved_at) FROM events").fetchall() == [
            ("ana", "pump", "ana", 31 * S)
        ]
        assert open_events(conn) == []
