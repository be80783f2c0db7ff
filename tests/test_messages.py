"""The messages' bytes, pinned: what each kind builds is what Vigie sent before the kinds were
classes (the strings below were printed by that code), so Kafka consumers of the plain format and
logs written before keep working; and each kind reads back what it built."""

from __future__ import annotations

from datetime import datetime

import pytest

from lib import messages as m
from lib.ingest.producer import SerialProducer

READING = ("humidite", "humidite", "42.7", {"session": "a1b2", "seq": "7", "ts_us": "1718000000000000"})
PINNED = {
    "states": (
        "_vigie.states",
        "humidite",
        '{"sensor":"humidite","session":"a1b2","seq":[7,8],"ts_us":[1718000000000000,1718000000050000],'
        '"judged":{"dbscan":["an",[0.9,0.1]],"rule:range":["ii",[null,null]]}}',
    ),
    "states of two sessions": (
        "_vigie.states",
        "humidite",
        '{"sensor":"humidite","session":["a1b2","c3d4"],"seq":[7,1],"ts_us":[1718000000000000,'
        '1718000001000000],"judged":{"zscore":["nn",[0.0,0.25]]}}',
    ),
    "no data": (
        "_vigie.states",
        "humidite",
        '{"session":"a1b2","seq":8,"sensor":"humidite","ts_us":1718000000050000,'
        '"states":[["rule:no_data","anomaly",1.0]]}',
    ),
    "reject": (
        "_vigie.rejects",
        "a1b2",
        '{"session":"a1b2","seq":1,"ts_us":1718000000100000,"reason":"not_a_number","raw":"humidite!4x.2"}',
    ),
    "start": (
        "_vigie.sessions",
        "a1b2",
        '{"session":"a1b2","event":"start","port":"/dev/ttyACM0","baud":9600,"host":"serre",'
        '"ts_us":1718000000000000,"pid":4242}',
    ),
    "gap open": (
        "_vigie.sessions",
        "a1b2",
        '{"session":"a1b2","event":"gap","start_us":1718000000300000,"end_us":null,"reason":"port lost"}',
    ),
    "gap": (
        "_vigie.sessions",
        "a1b2",
        '{"session":"a1b2","event":"gap","start_us":1718000000300000,"end_us":1718000004300000,'
        '"reason":"port unavailable at stop"}',
    ),
    "end": ("_vigie.sessions", "a1b2", '{"session":"a1b2","event":"end","ts_us":1718000009000000}'),
    "truth": (
        "_vigie.truth",
        "humidite",
        '{"run":"sim-1","sensor":"humidite","kind":"spike","start_us":1718000000250000,"end_us":1718000002250000}',
    ),
    "label": (
        "_vigie.labels",
        "a1b2",
        '{"session":"a1b2","seq":7,"sensor":"humidite","ts_us":1718000000000000,"verdict":"rejected",'
        '"detector":"dbscan","note":"false alarm","made_us":1718000100000000}',
    ),
    "label, missed": (
        "_vigie.labels",
        "a1b2",
        '{"session":"a1b2","seq":9,"sensor":"humidite","ts_us":1718000000500000,"verdict":"missed",'
        '"detector":null,"note":null,"made_us":1718000100000001}',
    ),
    "ack": (
        "_vigie.events",
        None,
        '{"type":"action","event_id":"a1b2:humidite:7","action":"ack","by":"ana","note":"seen",'
        '"made_us":1718000200000000}',
    ),
}
R1, R2 = (
    m.reading_message("humidite", "42.7", "a1b2", 7, 1718000000000000),
    m.reading_message("humidite", "42.8", "a1b2", 8, 1718000000050000),
)
BUILT = {
    "states": m.StatesBatch.of_readings(
        "humidite",
        [R1, R2],
        [1718000000000000, 1718000000050000],
        {"dbscan": ("an", [0.9, 0.1]), "rule:range": ("ii", [None, None])},
    ),
    "states of two sessions": m.StatesBatch.of_readings(
        "humidite",
        [R1, m.reading_message("humidite", "1.0", "c3d4", 1, 1718000001000000)],
        [1718000000000000, 1718000001000000],
        {"zscore": ("nn", [0.0, 0.25])},
    ),
    "no data": m.ReadingStates("humidite", "a1b2", 8, 1718000000050000, [("rule:no_data", "anomaly", 1.0)]),
    "reject": m.Reject("a1b2", 1, 1718000000100000, "not_a_number", "humidite!4x.2"),
    "start": m.SessionStart(
        session="a1b2", port="/dev/ttyACM0", baud=9600, host="serre", ts_us=1718000000000000, pid=4242
    ),
    "gap open": m.SessionGap(session="a1b2", start_us=1718000000300000, end_us=None, reason="port lost"),
    "gap": m.SessionGap(
        session="a1b2", start_us=1718000000300000, end_us=1718000004300000, reason="port unavailable at stop"
    ),
    "end": m.SessionEnd(session="a1b2", ts_us=1718000009000000),
    "truth": m.Truth("sim-1", "humidite", "spike", 1718000000250000, 1718000002250000),
    "label": m.Label("a1b2", 7, "humidite", 1718000000000000, "rejected", "dbscan", "false alarm", 1718000100000000),
    "label, missed": m.Label("a1b2", 9, "humidite", 1718000000500000, "missed", None, None, 1718000100000001),
    "ack": m.EventAction("a1b2:humidite:7", m.ACK, "ana", "seen", 1718000200000000),
}


def _bytes(msg: m.Message) -> tuple:
    return msg.topic, msg.key, msg.value


def test_a_reading_is_a_plain_record_with_its_headers():
    assert (R1.topic, R1.key, R1.value, R1.headers) == READING
    assert m.Reading.parse(R1) == m.Reading("humidite", "42.7", "a1b2", 7, 1718000000000000)
    assert (m.Reading.sessions([R1, R2]), m.Reading.seqs([R1, R2]), m.Reading.times([R1, R2])) == (
        ["a1b2", "a1b2"],
        [7, 8],
        [1718000000000000, 1718000000050000],
    )


@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_kind_builds_the_bytes_vigie_always_sent_and_reads_them_back(name):
    built = BUILT[name].message()
    assert _bytes(built) == PINNED[name]
    assert built.headers == {}
    if built.topic == m.STATES:
        assert m.parse_states(built) == [BUILT[name]]
    elif built.topic == m.SESSIONS:
        assert m.parse_session_event(built) == BUILT[name]
    else:
        assert type(BUILT[name]).parse(built) == BUILT[name]


def test_states_from_a_log_of_the_first_releases_are_read_reading_by_reading():
    old = m.json_message(
        m.STATES,
        "hum",
        {
            "sensor": "hum",
            "rows": [["s1", 3, 30, [["dbscan", "anomaly", 0.9]]], ["s2", 4, 40, [["dbscan", "normal", 0.1]]]],
        },
    )
    assert m.parse_states(old) == [
        m.ReadingStates("hum", "s1", 3, 30, [("dbscan", "anomaly", 0.9)]),
        m.ReadingStates("hum", "s2", 4, 40, [("dbscan", "normal", 0.1)]),
    ]


def test_unknown_kinds_are_refused_by_name():
    with pytest.raises(ValueError, match="'restart'"):
        m.parse_session_event(m.json_message(m.SESSIONS, "s", {"session": "s", "event": "restart"}))
    with pytest.raises(ValueError, match="'delete'"):
        m.EventAction.parse(
            m.json_message(
                m.EVENTS, None, {"type": "action", "event_id": "e", "action": "delete", "by": "x", "made_us": 1}
            )
        )


class _Out:
    def __init__(self):
        self.sent = []

    def send(self, msgs):
        self.sent.extend(msgs)

    def flush(self):
        pass


def test_the_programs_send_these_bytes():
    """The producer, the page and the detectors' no-data rule, through their own code."""
    from lib.page.events import action_messages
    from lib.page.labels import Label

    out = _Out()
    producer = SerialProducer(out, "/dev/ttyACM0", 9600, session_id="a1b2")
    producer.handle_line(b"humidite!4x.2", 1718000000100000)
    producer.handle_line(b"humidite!42.7", 1718000000000000)
    reject, reading = out.sent
    assert _bytes(reject) == PINNED["reject"]
    assert (reading.topic, reading.key, reading.value, reading.headers) == (
        "humidite",
        "humidite",
        "42.7",
        {"session": "a1b2", "seq": "2", "ts_us": "1718000000000000"},
    )
    label = Label("a1b2", 7, "humidite", datetime(2024, 6, 10, 6, 13, 20), "rejected", "dbscan", "false alarm")
    assert _bytes(label.message(1718000100000000)) == PINNED["label"]
    (ack,) = action_messages(["a1b2:humidite:7"], "ack", " ana ", note="seen", made_us=1718000200000000)
    assert _bytes(ack) == PINNED["ack"]
