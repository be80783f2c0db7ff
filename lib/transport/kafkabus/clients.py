"""kafka-python's clients as Vigie uses them: quiet during outages, closed without fuss."""

from __future__ import annotations

import logging
import os

from kafka import KafkaProducer

log = logging.getLogger(__name__)


class KafkaClients:
    """What every kafka-python client of one process is made with, from the configuration."""

    def __init__(self, config):
        t = config.transport
        self.settings = t
        self.bootstrap = [s.strip() for s in t.bootstrap_servers.split(",") if s.strip()]
        self.spool_path = config.data_dir / "spool" / "outbox.sqlite"
        self.client_id = f"vigie-{os.getpid()}"
        self.batch = t.kafka_batch

    def common(self) -> dict:
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "reconnect_backoff_max_ms": 1000,
            "metadata_max_age_ms": self.settings.metadata_max_age_ms,
            "request_timeout_ms": 15000,
            "bootstrap_timeout_ms": 5000,
        }

    def client(self) -> dict:
        """`common` plus what producers and consumers take: no kafka-python metrics (Vigie never
        reads them; recording them was about 1.5% of the store's py-spy samples at 20,000
        readings/s)."""
        return {**self.common(), "metrics_enabled": False}

    def kafka_producer(self) -> KafkaProducer:
        return KafkaProducer(
            **self.client(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            batch_size=256 * 1024,
            max_block_ms=10000,
            delivery_timeout_ms=30000,
        )


class _NoConnectionNoise(logging.Filter):
    """Drops kafka-python's per-attempt connection errors (several a second during an outage)."""

    MARKERS = (
        "KafkaConnectionError",
        "ECONNREFUSED",
        "NodeNotReady",
        "NoBrokersAvailable",
        "Unable to bootstrap",
        "socket disconnected",
        "Marking the coordinator dead",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is kafka-python's to report, not ours to hide
            return True
        return not any(m in text for m in self.MARKERS)


def quiet_kafka_logs() -> None:
    # kafka-python logs every refused connection at ERROR, several times a second during an
    # outage; the spool and the consumers say it once, clearly, instead.
    if os.environ.get("VIGIE_LOG_LEVEL", "").upper() != "DEBUG":
        for name in ("kafka.net", "kafka.conn", "kafka.client_async", "kafka.cluster"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        for name in (
            "kafka.coordinator",
            "kafka.coordinator.consumer",
            "kafka.coordinator.heartbeat",
            "kafka.consumer.fetcher",
            "kafka.producer.sender",
            "kafka.producer.kafka",
        ):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _NoConnectionNoise) for f in logger.filters):
                logger.addFilter(_NoConnectionNoise())


def close_quietly(client, what: str, **kwargs) -> None:
    """Close a kafka-python client that may be broken already (the broker went away): a failure
    to close must not hide the outage being handled."""
    if client is None:
        return
    try:
        client.close(**kwargs)
    except Exception:
        log.debug("closing %s", what, exc_info=True)
