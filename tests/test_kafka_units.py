"""Kafka mode without a broker: the producer's local spool (durable, in order, bounded, re-sendable) and the
consumer-group assignor."""

from __future__ import annotations

from lib.messages import reading_message
from lib.transport.spool import DeliveryLock, Spool


def _readings(n, start=0, sensor="temperature"):
    return [reading_message(sensor, str(float(i)), "s", i, 1_000_000 + i) for i in range(start, start + n)]


def _messages(rows):
    return [m for r in rows for m in r.messages()]


def test_spool_keeps_order_across_reopen_and_acks(tmp_path):
    path = tmp_path / "outbox.sqlite"
    spool = Spool(path, max_bytes=10_000_000)
    for i in range(0, 10, 2):  # five flushes of two readings: five rows
        assert spool.append(_readings(2, start=i)) == 0
    spool.close()
    again = Spool(path, max_bytes=10_000_000)  # a new process finds what the last one left
    rows = again.peek(4)
    assert [m.headers["seq"] for m in _messages(rows)] == ["0", "1", "2", "3"]
    again.ack(rows[-1].id)
    assert [m.value for m in _messages(again.peek(100))] == [str(float(i)) for i in range(4, 10)]
    assert again.pending()[0] == 6


def test_spool_stores_a_row_per_topic_and_flush(tmp_path):
    spool = Spool(tmp_path / "outbox.sqlite", max_bytes=10_000_000)
    mixed = [m for pair in zip(_readings(50), _readings(50, sensor="humidite")) for m in pair]
    spool.append(mixed)
    rows = spool.peek(1000)
    assert [(r.topic, r.key, r.n) for r in rows] == [("temperature", "temperature", 50), ("humidite", "humidite", 50)]
    assert rows[0].ts_ms == (1_000_000 + 49) // 1000
    assert [(m.topic, m.key, m.value, m.headers) for m in _messages(rows)] == [
        (m.topic, m.key, m.value, m.headers) for m in _readings(50) + _readings(50, sensor="humidite")
    ]


def test_spool_is_bounded_and_counts_refusals(tmp_path):
    spool = Spool(tmp_path / "outbox.sqlite", max_bytes=1000)
    refused = spool.append(_readings(100))
    assert 0 < refused < 100
    kept = spool.pending()[0]
    assert kept + refused == 100 and spool.pending()[1] <= 1000
    assert spool.refused() == refused
    # The oldest readings are the ones kept.
    assert [m.headers["seq"] for m in _messages(spool.peek(1000))] == [str(i) for i in range(kept)]
    # Delivered records free room for new ones.
    spool.ack(spool.peek(kept)[-1].id)
    assert spool.append(_readings(5, start=100)) == 0


def test_acknowledged_records_can_be_sent_again_first(tmp_path):
    spool = Spool(tmp_path / "outbox.sqlite", max_bytes=10_000_000, retain_s=60)
    for i in range(6):
        spool.append(_readings(1, start=i))
    spool.ack(spool.peek(4)[-1].id)
    assert spool.requeue_retained() == 4
    assert [m.headers["seq"] for m in _messages(spool.peek(100))] == ["0", "1", "2", "3", "4", "5"]


def test_a_spool_left_by_the_per_message_version_is_delivered(tmp_path):
    """An upgrade finds the old table (a row per message): its waiting messages become batches."""
    import json
    import sqlite3

    path = tmp_path / "outbox.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT,
                             value TEXT NOT NULL, headers TEXT, size INTEGER NOT NULL, acked REAL);
        CREATE TABLE totals (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL, refused INTEGER NOT NULL);
        INSERT INTO totals VALUES (1, 300, 0);""")
    for m, acked in zip(_readings(3), (1.0, None, None)):
        conn.execute(
            "INSERT INTO outbox (topic, key, value, headers, size, acked) VALUES (?, ?, ?, ?, 100, ?)",
            (m.topic, m.key, m.value, json.dumps(m.headers), acked),
        )
    conn.commit()
    conn.close()
    spool = Spool(path, max_bytes=10_000_000)
    assert [m.headers["seq"] for m in _messages(spool.peek(100))] == ["1", "2"]
    assert spool.pending()[0] == 2


def test_one_deliverer_per_spool(tmp_path):
    path = tmp_path / "outbox.sqlite"
    first, second = DeliveryLock(path), DeliveryLock(path)
    assert first.try_acquire() and not second.try_acquire()
    first.close()
    assert second.try_acquire()
    second.close()


def test_round_robin_assignor_tolerates_members_with_different_topics():
    from types import SimpleNamespace

    from lib.transport.kafkabus.assignor import RoundRobin

    class Cluster:
        def partitions_for_topic(self, topic):
            return {0}

    def member(mid, topics):
        return SimpleNamespace(member_id=mid, group_instance_id=None, metadata=SimpleNamespace(topics=topics))

    out = RoundRobin.assign(Cluster(), [member("a", []), member("b", ["humidite", "temperature"])])
    assert dict(out["b"].assigned_partitions) == {"humidite": [0], "temperature": [0]}
    assert list(out["a"].assigned_partitions) == []
    out = RoundRobin.assign(
        Cluster(), [member("a", ["humidite", "temperature"]), member("b", ["humidite", "temperature"])]
    )
    assert {t for t, _ in out["a"].assigned_partitions} | {t for t, _ in out["b"].assigned_partitions} == {
        "humidite",
        "temperature",
    }
    assert len(list(out["a"].assigned_partitions)) == 1


def test_packed_bodies_merge_column_by_column():
    from lib.messages import Message
    from lib.transport.packing import encode, merge, unpack

    a = _readings(3)
    b = _readings(2, start=3)
    b[1].headers["session"] = "t"  # "session" shared in a, not in b
    c = [reading_message("temperature", "9.0", "s", 9, 9)]
    odd = [Message("temperature", "temperature", "1.0", {"other": "x"})]  # other header names
    for parts in ([a, b, c], [a, odd, c], [c, c]):
        got = unpack("temperature", merge([encode(p) for p in parts]))
        want = [m for p in parts for m in p]
        assert [(m.key, m.value, m.headers) for m in got] == [(m.key, m.value, m.headers) for m in want]
