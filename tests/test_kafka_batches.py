"""Kafka batch records (many readings of a sensor in one record) against a real Tansu broker on
127.0.0.1: what a third-party consumer sees, round trips, history across record boundaries, and a
commit mid-stream followed by a restart (nothing lost, nothing read twice). Plus record packing
without a broker."""

from __future__ import annotations

import dataclasses
import json

from kafka import KafkaConsumer

from lib.config import load_config
from lib.messages import STATES, json_message, reading_message
from lib.transport.kafkabus import KafkaTransport
from lib.transport.kafkabus.records import BATCH_HEADER, pack_messages, pack_spool
from lib.transport.packing import SHIFT, encode
from lib.transport.spool import Batch
from tests.system import wait_for

SENSORS = ("humidite", "temperature", "pression")


def kafka_config(broker, tmp_path, batch: bool = True):
    """The configuration with the Kafka transport on `broker`, data in `tmp_path`."""
    config = load_config()
    t = dataclasses.replace(
        config.transport,
        kind="kafka",
        bootstrap_servers=broker.bootstrap,
        kafka_batch=batch,
        # Tansu finishes a group join after about half the session timeout.
        session_timeout_ms=4000,
        max_poll_interval_ms=30000,
        metadata_max_age_ms=1000,
    )
    return dataclasses.replace(config, transport=t, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))


def transport(broker, tmp_path, batch: bool = True) -> KafkaTransport:
    return KafkaTransport(kafka_config(broker, tmp_path, batch))


def readings(sensors, n, start=0, session="s"):
    return [
        reading_message(s, f"{20 + i / 100:.2f}", session, i, 1_700_000_000_000_000 + i * 1000)
        for i in range(start, start + n)
        for s in sensors
    ]


def produce(kt: KafkaTransport, flushes) -> None:
    """Each flush delivered before the next, so each is its own record per sensor."""
    out = kt.producer()
    try:
        for msgs in flushes:
            out.send(msgs)
            out.flush()
            wait_for(lambda: out.spool.pending()[0] == 0, timeout=60, what="spool delivered")
    finally:
        out.close()


def consume(consumer, want: int, max_records: int = 1000, timeout: float = 60) -> list:
    got = []
    wait_for(
        lambda: got.extend(consumer.poll(max_records, 0.2)) or len(got) >= want,
        timeout=timeout,
        interval=0,
        what=f"{want} messages",
    )
    return got


def same(messages) -> list:
    return [(m.topic, m.key, m.value, m.headers) for m in messages]


def raw_records(broker, topic: str) -> list:
    """What any Kafka client sees in a topic."""
    c = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return list(c)
    finally:
        c.close()


def test_batches_round_trip_and_are_readable_by_any_consumer(broker, tmp_path):
    sensors = [f"rt-{s}" for s in SENSORS]
    kt = transport(broker, tmp_path)
    sent = [readings(sensors, 40, 0), readings(sensors, 1, 40), readings(sensors, 59, 41)]
    produce(kt, sent)
    consumer = kt.consumer("rt", sensors=True)
    try:
        got = consume(consumer, 300)
    finally:
        consumer.close()
    for s in sensors:
        mine = [m for m in got if m.topic == s]
        assert same(mine) == same(m for flush in sent for m in flush if m.topic == s)
        offsets = [m.offset for m in mine]
        assert offsets == sorted(set(offsets)), "offsets must increase within a partition"
    records = raw_records(broker, sensors[0])
    # Three flushes: a batch, a lone reading (the original program's plain format) and a batch.
    assert [dict(r.headers).get(BATCH_HEADER) for r in records] == [b"1", None, b"1"]
    batch, plain = records[0], records[1]
    assert batch.key == sensors[0].encode()
    body = json.loads(batch.value)
    assert body["k"] == sensors[0] and body["v"][:2] == ["20.00", "20.01"] and body["hc"] == {"session": "s"}
    assert body["hv"]["seq"][:2] == ["0", "1"]
    assert batch.timestamp == (1_700_000_000_000_000 + 39 * 1000) // 1000  # the last reading's receive time
    assert plain.value == b"20.40" and dict(plain.headers)["seq"] == b"40"


def test_one_record_per_reading_when_batching_is_off(broker, tmp_path):
    sensors = [f"plain-{s}" for s in SENSORS]
    kt = transport(broker, tmp_path, batch=False)
    sent = readings(sensors, 20)
    produce(kt, [sent])
    records = raw_records(broker, sensors[1])
    assert len(records) == 20 and all(BATCH_HEADER not in dict(r.headers) for r in records)
    assert [r.value.decode() for r in records] == [m.value for m in sent if m.topic == sensors[1]]
    consumer = kt.consumer("plain", sensors=True)
    try:
        assert sorted(same(consume(consumer, 60)), key=repr) == sorted(same(sent), key=repr)
    finally:
        consumer.close()


def test_history_reads_back_across_records(broker, tmp_path):
    sensor = "hist-humidite"
    kt = transport(broker, tmp_path)
    # Records of 7, 1, 30 and 12 readings.
    sizes, sent, start = (7, 1, 30, 12), [], 0
    for n in sizes:
        sent.append(readings([sensor], n, start))
        start += n
    produce(kt, sent)
    consumer = kt.consumer("hist", sensors=True)
    try:
        got = [m for m in consume(consumer, sum(sizes)) if m.topic == sensor]
        assert len({m.offset >> SHIFT for m in got}) == len(sizes)
        for i in (0, 1, 7, 8, 20, 38, 45, 49):
            for n in (1, 5, 25, 60):
                want = got[max(0, i - n) : i]
                assert same(consumer.history(got[i], n)) == same(want), (i, n)
                assert [m.offset for m in consumer.history(got[i], n)] == [m.offset for m in want]
    finally:
        consumer.close()


def test_commit_mid_stream_then_restart_loses_and_repeats_nothing(broker, tmp_path):
    sensors = [f"restart-{s}" for s in SENSORS]
    kt = transport(broker, tmp_path)
    sent = [readings(sensors, 25, i * 25) for i in range(8)]  # 8 records of 25 per sensor
    produce(kt, sent)
    first = kt.consumer("restart", sensors=True)
    try:
        part = consume(first, 1, max_records=60)
        # Whole records only: each sensor's share is a multiple of a record's 25 readings.
        assert all(sum(m.topic == s for m in part) % 25 == 0 for s in sensors)
        assert len(part) < 600, "the commit must land mid-stream"
        first.commit()
    finally:
        first.close()
    second = kt.consumer("restart", sensors=True)
    try:
        rest = consume(second, 600 - len(part))
    finally:
        second.close()
    assert sorted(same(part + rest), key=repr) == sorted(same(m for flush in sent for m in flush), key=repr)


def test_outputs_pack_per_topic_and_key():
    states = [json_message(STATES, s, {"n": i}) for i in range(3) for s in ("a", "b")] + [json_message(STATES, "c", {})]
    records = pack_messages(states)
    assert [(r.key, dict(r.headers).get(BATCH_HEADER)) for r in records] == [("a", b"1"), ("b", b"1"), ("c", None)]
    assert json.loads(records[0].value)["v"] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert len(pack_messages(states, batch=False)) == 7


def test_spool_rows_merge_into_records_up_to_the_size_limit(monkeypatch):
    import lib.transport.kafkabus.records as kafka_records

    rows = []
    for i in range(6):
        msgs = readings(["a"] if i % 2 else ["a", "b"], 3, i * 3)
        for topic in ("a", "b"):
            part = [m for m in msgs if m.topic == topic]
            if part:
                rows.append(Batch(len(rows) + 1, topic, topic, len(part), encode(part), 1))
    records = pack_spool(rows)
    assert [(r.topic, r.first_id) for r in records] == [("a", 1), ("b", 2)]
    assert len(json.loads(records[0].value)["v"]) == 18 and len(json.loads(records[1].value)["v"]) == 9
    limit = max(len(r.body) for r in rows) * 2
    monkeypatch.setattr(kafka_records, "RECORD_MAX_BYTES", limit)
    small = [r for r in pack_spool(rows) if r.topic == "a"]
    assert 1 < len(small) < 6 and all(len(r.value) <= limit for r in small)
    assert [v for r in small for v in json.loads(r.value)["v"]] == json.loads(records[0].value)["v"]
