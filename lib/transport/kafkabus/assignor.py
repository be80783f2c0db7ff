"""The consumer group's partition assignor."""

from __future__ import annotations

import logging

from kafka import TopicPartition
from kafka.coordinator.assignors.abstract import ConsumerProtocolAssignment
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

log = logging.getLogger(__name__)


class RoundRobin(RoundRobinPartitionAssignor):
    """kafka-python 3.0.12's round-robin assignor with its skip loop fixed: when members' subscriptions
    differ (one has not seen a new topic yet, or sees none after a broker restart) the original
    assigns a (group_instance_id, member_id) pair as a member id and the leader crashes with a
    KeyError, leaving the group without a leader. Same protocol name, same assignment otherwise."""

    @classmethod
    def assign(cls, cluster, members):
        topics = sorted({t for m in members for t in m.metadata.topics})
        partitions = []
        for topic in topics:
            found = cluster.partitions_for_topic(topic)
            if found is None:
                log.warning("no partition metadata for topic %s", topic)
                continue
            partitions.extend(TopicPartition(topic, p) for p in found)
        partitions.sort()
        static = sorted(m.member_id for m in members if m.group_instance_id is not None)
        dynamic = sorted(m.member_id for m in members if m.group_instance_id is None)
        order = static + dynamic
        subscribed = {m.member_id: set(m.metadata.topics) for m in members}
        assignment = {m: {} for m in order}
        i = 0
        for tp in partitions:
            for _ in range(len(order)):
                member = order[i % len(order)]
                i += 1
                if tp.topic in subscribed[member]:
                    assignment[member].setdefault(tp.topic, []).append(tp.partition)
                    break
        return {m: ConsumerProtocolAssignment(cls.version, sorted(assignment[m].items()), b"") for m in order}
