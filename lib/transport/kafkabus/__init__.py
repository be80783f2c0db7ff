"""The Kafka transport (kafka-python): the same producer, detectors and store across many boards,
worker processes and machines, on any Kafka-protocol broker. A package named so that it cannot
shadow kafka-python's `kafka`.

- Producing (`delivery`): readings go to their sensor's topic, keyed by the sensor (one partition
  per sensor, so its order holds). Everything passes through a local durable spool
  (`lib.transport.spool`) and leaves it only once the broker acknowledged it (acks=all, idempotent
  producer), so a broker outage costs no reading. Missing topics are created with
  `[transport] partitions` (`topics`).
- Records (`records`): one record per topic and key holds many messages, column by column; a lone
  message is a plain record, readable by consumers of one reading per record. Consumers read both.
- Consuming (`consumer`): a consumer group subscribed to a pattern, partitions spread round-robin
  (`assignor`), offsets committed by hand after the work is done; `history` re-reads a sensor's
  records backwards so a worker that takes a sensor over rebuilds its window.
- A broker that comes back empty (a new cluster, or Tansu's memory storage) is noticed on both
  sides: the producer sends its recently acknowledged rows again, consumers re-read what the
  cluster has. Replays are harmless downstream.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from lib.transport.base import Transport
from lib.transport.kafkabus.clients import KafkaClients, quiet_kafka_logs
from lib.transport.kafkabus.consumer import KafkaGroupConsumer
from lib.transport.kafkabus.delivery import SpooledProducer
from lib.transport.kafkabus.topics import TopicMaker


class KafkaTransport(Transport):
    backlog_unit = "records"  # a record carries many readings (`records`)

    def __init__(self, config):
        quiet_kafka_logs()
        self.clients = KafkaClients(config)

    @classmethod
    def from_config(cls, config) -> KafkaTransport:
        return cls(config)

    def producer(self) -> SpooledProducer:
        return SpooledProducer(self.clients)

    def consumer(self, group: str, topics: Sequence[str] = (), sensors: bool = False) -> KafkaGroupConsumer:
        return KafkaGroupConsumer(self.clients, group, topics, sensors)

    def create_topics(self, topics: Iterable[str]) -> None:
        maker = TopicMaker(self.clients)
        try:
            maker.ensure(topics)
        finally:
            maker.reset()

    def backlog(self) -> dict[str, int]:
        from lib.transport.kafkabus.lag import group_lag

        return group_lag(self.clients)
