"""Names from the wire cannot break a query, a file name or a chart.

The parser only lets sensor names of Kafka's topic charset [A-Za-z0-9._-] through, so quotes,
SQL and paths are rejected at the door. Session ids and (over Kafka) names reach the store
without the parser, so the store and the read queries are also tried with hostile names:
values always travel as parameters, so they come back verbatim and nothing else changes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lib.ingest.protocol import BAD_TOPIC, Parsed, Rejected, parse_line
from lib.messages import SessionStart
from lib.page import charts, queries
from lib.store.batch import Batch
from lib.store.reader import read_db
from lib.store.retention import prune
from lib.store.schema import init_db
from lib.store.writer import write_batch

HOSTILE = [
    "a'b",
    'a"b',
    "x'); DROP TABLE readings; --",
    "../../etc/passwd",
    "a b",
    "é",
    "<script>alert(1)</script>",
    "%s%n{0}",
    "a\\b",
    "line\nbreak",
    "${jndi:ldap://x}",
]
ODD_BUT_VALID = ["-", "_", ".a", "a..b", "9", "A.B-c_d", "x" * 249]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_sensor_names_are_rejected_at_parse(name):
    r = parse_line(f"{name}!1.5\r\n".encode())
    assert isinstance(r, Rejected) and r.reason in (BAD_TOPIC, "bad_utf8", "no_separator", "empty_topic"), r
    assert r.raw.isascii() and r.raw.isprintable()


@pytest.mark.parametrize("name", ODD_BUT_VALID)
def test_odd_but_valid_names_pass(name):
    assert parse_line(f"{name}!1.5".encode()) == Parsed(name, 1.5)


def test_hostile_names_and_session_ids_stored_and_queried_verbatim(tmp_path):
    db = tmp_path / "v.duckdb"
    init_db(db)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    t_us = int(now.replace(tzinfo=timezone.utc).timestamp() * 1e6)
    names = HOSTILE + ODD_BUT_VALID
    batch = Batch()
    for i, name in enumerate(names):
        session = f"s'{i}; DROP TABLE states; --"
        batch.sessions.append(SessionStart(session=session, port=name, baud=9600, host=name, ts_us=t_us - 60_000_000))
        for k in range(30):
            ts = t_us - (30 - k) * 1_000_000
            batch.readings[(session, k + 1)] = (name, ts, float(k))
            for det in ("dbscan", "iforest"):
                state = "anomaly" if k == 25 else "normal"
                batch.states[(session, k + 1, det)] = (name, ts, state, 0.9 if k == 25 else 0.1)
        batch.rejects[(session, 99)] = (t_us, BAD_TOPIC, name)
    write_batch(db, batch)
    write_batch(db, batch)  # a replay: nothing doubles, even with hostile keys
    since = now - timedelta(minutes=5)
    with read_db(db) as conn:
        assert sorted(queries.sensor_names(conn)) == sorted(names)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (30 * len(names),)
        assert conn.execute("SELECT count(*) FROM states").fetchone() == (60 * len(names),)
        for i, name in enumerate(names):
            session = f"s'{i}; DROP TABLE states; --"
            got = queries.recent_readings(conn, name, since)
            assert len(got) == 30 and set(got["session_id"]) == {session}
            flagged = queries.recent_states(conn, name, since, ("anomaly",))
            assert len(flagged) == 2
            f = queries.Filters(sessions=(session,), sensors=(name,))
            assert queries.count_readings(conn, f) == 30
            assert len(queries.anomalies(conn, f)) >= 1
            line, marks = queries.chart_data(conn, name, since, now + timedelta(seconds=1))
            assert len(line) >= 1
            chart = charts.live_chart(line, marks)
            assert chart.to_dict()  # the chart spec builds; the name is data, not code
    # Retention's export file names come from timestamps only, never from a sensor or session.
    removed = prune(db, now + timedelta(days=1), tmp_path / "export", "csv")
    assert removed["readings"] == 30 * len(names)
    files = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert all(p.split("-before-")[0] in ("readings", "states", "rejects") for p in files), files
    text = (tmp_path / "export" / [p for p in files if p.startswith("readings")][0]).read_text()
    assert "DROP TABLE readings" in text  # the name travelled as data
