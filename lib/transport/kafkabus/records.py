"""Kafka records to and from Vigie's messages: the codec both ends of a topic share.

A delivery round sends one record per topic and key holding all of its messages (kafka-python's
per-record cost was most of the transport's time at 20,000 readings/s): header `vigie-batch: 1`,
key = the sensor, value = a JSON object, column by column (`lib.transport.packing`): {"k": key,
"v": [value texts], "hc": {header: value shared by all}, "hv": {header: [one value per
message]}} (or "h": [headers] when header names differ), the message timestamp the last reading's
receive time. A lone message is a plain record, the format of the original program's producer:
value = the reading as UTF-8 text, headers `session`, `seq`, `ts_us`, timestamp = receive time;
`[transport] kafka_batch = false` sends every message that way. Consumers read both. A consumed
message's offset is (Kafka offset << SHIFT) + its index in the record, so offsets keep increasing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from lib.messages import TS_US, Message
from lib.transport.packing import MAX_MESSAGES, SHIFT, encode, merge, unpack
from lib.transport.spool import Batch

log = logging.getLogger(__name__)

BATCH_HEADER, BATCH_VERSION = "vigie-batch", b"1"
# Under a backlog a delivery round merges each topic's spool rows into records of up to this
# size, which stays under the broker's and kafka-python's 1 MB defaults.
RECORD_MAX_BYTES = 512 * 1024


@dataclass(slots=True)
class OutRecord:
    """One Kafka record to send: a single message (the original producer's format) or a batch
    (`vigie-batch` header, value = lib.transport.packing's JSON). `first_id`: the first spool row
    it carries."""

    topic: str
    key: str | None
    value: str
    headers: list
    timestamp_ms: int | None
    first_id: int = 0


def plain_record(m: Message, first_id: int = 0) -> OutRecord:
    ts_us = m.headers.get(TS_US)
    return OutRecord(
        m.topic,
        m.key,
        m.value,
        [(k, str(v).encode()) for k, v in m.headers.items()],
        int(ts_us) // 1000 if ts_us else None,
        first_id,
    )


def batch_record(topic: str, key: str | None, body: str, ts_ms: int | None, first_id: int = 0) -> OutRecord:
    return OutRecord(topic, key, body, [(BATCH_HEADER, BATCH_VERSION)], ts_ms, first_id)


def pack_messages(messages: Sequence[Message], batch: bool = True) -> list[OutRecord]:
    """Records for `messages`: with `batch`, one per topic and key (a lone message stays a plain
    record, readable by a consumer of one reading per record); otherwise one per message."""
    if not batch:
        return [plain_record(m) for m in messages]
    groups: dict[tuple, list[Message]] = {}
    for m in messages:
        groups.setdefault((m.topic, m.key), []).append(m)
    out = []
    for (topic, key), msgs in groups.items():
        if len(msgs) == 1:
            out.append(plain_record(msgs[0]))
            continue
        for i in range(0, len(msgs), MAX_MESSAGES):
            part = msgs[i : i + MAX_MESSAGES]
            ts_us = part[-1].headers.get(TS_US)
            out.append(batch_record(topic, key, encode(part), int(ts_us) // 1000 if ts_us else None))
    return out


def pack_spool(rows: Sequence[Batch], batch: bool = True) -> list[OutRecord]:
    """Records for spool rows, in order per topic and key. With `batch`, a topic's consecutive rows
    are merged into one record up to RECORD_MAX_BYTES (a single row is sent as stored, without
    decoding it); otherwise every message is a plain record."""
    groups: dict[tuple, list[Batch]] = {}
    for r in rows:
        groups.setdefault((r.topic, r.key), []).append(r)
    out: list[OutRecord] = []
    for (topic, key), group in groups.items():
        if not batch:
            out.extend(plain_record(m, r.id) for r in group for m in r.messages())
            continue
        chunk: list[Batch] = []
        size = n = 0
        for r in [*group, None]:
            if chunk and (r is None or size + len(r.body) > RECORD_MAX_BYTES or n + r.n > MAX_MESSAGES):
                out.append(_chunk_record(topic, key, chunk))
                chunk, size, n = [], 0, 0
            if r is not None:
                chunk.append(r)
                size += len(r.body)
                n += r.n
    return out


def _chunk_record(topic: str, key: str | None, chunk: list[Batch]) -> OutRecord:
    first, last = chunk[0], chunk[-1]
    if len(chunk) == 1 and first.n == 1:
        return plain_record(first.messages()[0], first.id)
    body = first.body if len(chunk) == 1 else merge([r.body for r in chunk])
    return batch_record(topic, key, body, last.ts_ms, first.id)


def record_messages(r) -> list[Message]:
    """The messages a consumed record holds, offsets (Kafka offset << SHIFT) + index."""
    headers = r.headers or []
    for name, version in headers:
        if name == BATCH_HEADER:
            if version != BATCH_VERSION:
                raise RuntimeError(
                    f"{r.topic}[{r.partition}] offset {r.offset}: batch format "
                    f"{version.decode(errors='replace')!r}, this Vigie reads {BATCH_VERSION.decode()!r}; "
                    "upgrade this worker"
                )
            try:
                return unpack(r.topic, r.value, r.partition, r.offset)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping malformed batch record %s[%d] offset %d: %s", r.topic, r.partition, r.offset, exc)
                return []
    return [
        Message(
            r.topic,
            r.key.decode() if r.key is not None else None,
            r.value.decode() if r.value is not None else "",
            {k: v.decode() for k, v in headers},
            r.partition,
            r.offset << SHIFT,
        )
    ]
