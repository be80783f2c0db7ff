"""Topic administration: which topics a consumer follows, creating missing ones, and telling
whether the broker lost what it had acknowledged (a new or emptied cluster)."""

from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from lib.transport.kafkabus.clients import KafkaClients, close_quietly

log = logging.getLogger(__name__)

# Sensor topics (see lib.ingest.protocol.valid_topic: no "_vigie" or "__" prefix), for pattern subscriptions.
SENSOR_PATTERN = r"(?!_vigie|__)[A-Za-z0-9._-]+"


def subscription_pattern(topics: Sequence[str], sensors: bool) -> str:
    parts = [re.escape(t) for t in topics]
    if sensors:
        parts.append(SENSOR_PATTERN)
    if not parts:
        raise ValueError("a consumer needs topics or sensors")
    return "^(?:" + "|".join(parts) + ")$"


class TopicMaker:
    """Creates missing topics with the configured partitions before the first record goes to them."""

    def __init__(self, clients: KafkaClients):
        self.clients = clients
        self.known: set[str] = set()
        self._admin = None

    def ensure(self, topics: Iterable[str]) -> None:
        missing = sorted(set(topics) - self.known)
        if not missing:
            return
        s = self.clients.settings
        for name in missing:
            try:
                self.admin().create_topics([NewTopic(name, s.partitions, s.replication_factor)])
                log.info("created topic %s (%d partition(s))", name, s.partitions)
            except TopicAlreadyExistsError:
                pass  # another process made it first
            self.known.add(name)

    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.clients.common())
        return self._admin

    def reset(self) -> None:
        """After an outage the broker may be a new, empty cluster: check every topic again."""
        self.known.clear()
        close_quietly(self._admin, "admin client")
        self._admin = None


def cluster_lost_records(clients: KafkaClients, maker: TopicMaker, ends: dict) -> bool:
    """True when the broker no longer has records it acknowledged: a topic or partition is gone, or
    its log ends before them (a new or emptied cluster)."""
    topics = {t for t, _ in ends}
    if topics - set(maker.admin().list_topics()):
        return True
    probe = KafkaConsumer(**clients.client(), group_id=None, enable_auto_commit=False, allow_auto_create_topics=False)
    try:
        tps = [TopicPartition(t, p) for t, p in ends]
        found = probe.end_offsets(tps, timeout_ms=5000)
    except KafkaTimeoutError:
        return True  # a partition that no longer exists
    finally:
        probe.close()
    return any(found.get(tp, 0) < ends[(tp.topic, tp.partition)] for tp in tps)
