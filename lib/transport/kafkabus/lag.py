"""How far each consumer group is behind on the broker, for the page's health view: per group,
the partitions' end offsets less the group's committed offsets.

Counted in Kafka records. With `[transport] kafka_batch` a record carries up to a delivery
round's readings of one sensor, so under a backlog the figure undercounts readings; it still
goes to 0 when a group has caught up, and grows while one falls behind, which is what the
operator reads it for.

The page asks every second or so: an answer is reused for `MAX_AGE_S`, and a broker that does
not answer costs one short timeout per `MAX_AGE_S`, not a stalled page on every refresh.
"""

from __future__ import annotations

import re
import threading
import time

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

from lib.transport.kafkabus.clients import KafkaClients, close_quietly
from lib.transport.kafkabus.topics import SENSOR_PATTERN

MAX_AGE_S = 5.0
TIMEOUT_MS = 2000

_lock = threading.Lock()
_last: dict[tuple, tuple[float, dict[str, int] | Exception]] = {}


def group_lag(clients: KafkaClients) -> dict[str, int]:
    """{group: records it follows that no member has committed yet}, for every group the cluster
    knows (a cluster shared with other applications shows theirs too). Raises the broker's error."""
    key = tuple(clients.bootstrap)
    with _lock:
        at, answer = _last.get(key, (float("-inf"), None))
        if time.monotonic() - at >= MAX_AGE_S:
            try:
                answer = _measure(clients)
            except Exception as exc:  # remembered like an answer, so an outage is not retried per refresh
                answer = exc
            _last[key] = (time.monotonic(), answer)
    if isinstance(answer, Exception):
        raise answer
    return dict(answer)


def _measure(clients: KafkaClients) -> dict[str, int]:
    settings = {**clients.common(), "request_timeout_ms": TIMEOUT_MS, "bootstrap_timeout_ms": TIMEOUT_MS}
    admin = KafkaAdminClient(**settings)
    try:
        groups = sorted(g["group_id"] for g in admin.list_groups())
        committed = admin.list_group_offsets({g: None for g in groups}) if groups else {}
        partitions = [
            TopicPartition(t["name"], p["partition_index"])
            for t in admin.describe_topics()
            if not t.get("is_internal")
            for p in t["partitions"]
        ]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions}) if partitions else {}
        starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in partitions}) if partitions else {}
    finally:
        close_quietly(admin, "the lag's admin client")
    sensors = re.compile(SENSOR_PATTERN)
    out = {}
    for group in groups:
        offsets = {tp: meta.offset for tp, meta in committed.get(group, {}).items()}
        # A group commits only the partitions it has read from; what it follows but has not read
        # yet it owes from the log's start (consumers start at the earliest offset). Its topics are
        # those it committed on, and every sensor topic if it reads any: consumers take sensors by
        # a pattern (`topics.subscription_pattern`), so a sensor new since its last commit counts.
        topics = {tp.topic for tp in offsets}
        follows_sensors = any(sensors.fullmatch(t) for t in topics)
        out[group] = sum(
            max(0, ends[tp].offset - max(offsets.get(tp, -1), starts[tp].offset, 0))
            for tp in partitions
            if tp in ends and tp in starts and (tp.topic in topics or (follows_sensors and sensors.fullmatch(tp.topic)))
        )
    return out
