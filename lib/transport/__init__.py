"""The transport stage: messages between the programs, the same interface (lib.transport.base)
over an embedded SQLite log or a Kafka cluster.

Adding a transport: a module with a `Transport` subclass, and one line in TRANSPORTS (its name is
also one of [transport] kind's choices in lib/config.py; tests/test_layout.py checks they agree).
"""

from __future__ import annotations

import importlib

# [transport] kind -> "module:class". Named, not imported: a program imports only the transport it
# runs (kafka-python alone takes about 0.15 s to import, and the embedded default needs none of it).
TRANSPORTS = {
    "embedded": "lib.transport.embedded:EmbeddedTransport",
    "kafka": "lib.transport.kafkabus:KafkaTransport",
}


def transport_class(kind: str):
    """The Transport subclass registered as `kind`."""
    try:
        module, _, name = TRANSPORTS[kind].partition(":")
    except KeyError:
        raise ValueError(f"unknown transport {kind!r}; known: {', '.join(TRANSPORTS)}") from None
    return getattr(importlib.import_module(module), name)


def open_transport(config):
    """The transport the configuration names."""
    return transport_class(config.transport.kind).from_config(config)
