"""Kafka mode without a broker: the producer's local spool (durable, in order, bounded, re-sendable) and the
consumer-group assignor."""
from __future__ import annotations

from lib.spool import DeliveryLock, Spool
from lib.transport.base import reading_message


def _readings(n, start=0):
    return [reading_message("temperature", str(float(i)), "s", i, 1_000_000 + i) for i in range(start, start + n)]


def test_spool_keeps_order_across_reopen_and_acks(tmp_path):
    path = tmp_path / "outbox.sqlite"
    spool = Spool(path, max_bytes=10_000_000)
    assert spool.append(_readings(10)) == 0
    spool.close()
    again = Spool(path, max_bytes=10_000_000)      # a new process finds what the last one left
    batch = again.peek(4)
    assert [m.headers["seq"] for _, m in batch] == ["0", "1", "2", "3"]
    again.ack(batch[-1][0])
    assert [m.value for _, m in again.peek(100)] == [str(float(i)) for i in range(4, 10)]
    assert again.pending()[0] == 6


def test_spool_is_bounded_and_counts_refusals(tmp_path):
    spool = Spool(tmp_path / "outbox.sqlite", max_bytes=1000)
    refused = spool.append(_readings(100))
    assert 0 < refused < 100
    kept = spool.pending()[0]
    assert kept + refused == 100 and spool.pending()[1] <= 1000
    assert spool.refused() == refused
    # Delivered records free room for new ones.
    spool.ack(spool.peek(kept)[-1][0])
    assert spool.append(_readings(5, start=100)) == 0


def test_acknowledged_records_can_be_sent_again_first(tmp_path):
    spool = Spool(tmp_path / "outbox.sqlite", max_bytes=10_000_000, retain_s=60)
    spool.append(_readings(6))
    spool.ack(spool.peek(4)[-1][0])
    assert spool.requeue_retained() == 4
    assert [m.headers["seq"] for _, m in spool.peek(100)] == ["0", "1", "2", "3", "4", "5"]


def test_one_deliverer_per_spool(tmp_path):
    path = tmp_path / "outbox.sqlite"
    first, second = DeliveryLock(path), DeliveryLock(path)
    assert first.try_acquire() and not second.try_acquire()
    first.close()
    assert second.try_acquire()
    second.close()


def test_round_robin_assignor_tolerates_members_with_different_topics():
    from types import SimpleNamespace

    from lib.transport.kafka import RoundRobin

    class Cluster:
        def partitions_for_topic(self, topic):
            return {0}

    def member(mid, topics):
        return SimpleNamespace(member_id=mid, group_instance_id=None, metadata=SimpleNamespace(topics=topics))

    out = RoundRobin.assign(Cluster(), [member("a", []), member("b", ["humidite", "temperature"])])
    assert dict(out["b"].assigned_partitions) == {"humidite": [0], "temperature": [0]}
    assert list(out["a"].assigned_partitions) == []
    out = RoundRobin.assign(Cluster(), [member("a", ["humidite", "temperature"]), member("b", ["humidite", "temperature"])])
    assert {t for t, _ in out["a"].assigned_partitions} | {t for t, _ in out["b"].assigned_partitions} == {"humidite", "temperature"}
    assert len(list(out["a"].assigned_partitions)) == 1
