"""Operator labels: confirm or reject a flagged reading, or mark an anomaly no detector flagged.

The app never writes the DuckDB file (one writer: workers/store.py). A label travels like every
other fact: the app sends it on the internal `_vigie.labels` topic, the store files it in the
`labels` table (lib/store/sink.py, lib/store/writer.py). The latest verdict on a reading wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from lib import messages
from lib.transport import open_transport

CONFIRMED, REJECTED, MISSED = "confirmed", "rejected", "missed"
VERDICTS = (CONFIRMED, REJECTED, MISSED)
#: verdicts that say "this reading is an anomaly" (the truth precision/recall use)
ANOMALOUS = (CONFIRMED, MISSED)


@dataclass(frozen=True)
class Label:
    session: str
    seq: int
    sensor: str
    ts: datetime  # the reading's time (UTC, naive as DuckDB returns it)
    verdict: str
    detector: str | None = None
    note: str | None = None

    def message(self, made_us: int | None = None) -> messages.Message:
        """The label on its way to the store, made at `made_us` (default: now)."""
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r} (known: {', '.join(VERDICTS)})")
        ts = self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=timezone.utc)
        return messages.Label(
            self.session,
            int(self.seq),
            self.sensor,
            int(round(ts.timestamp() * 1e6)),
            self.verdict,
            self.detector,
            self.note or None,
            made_us if made_us is not None else time.time_ns() // 1000,
        ).message()


def send_labels(config, labels: list[Label]) -> None:
    """Send labels to the store through the configured transport; durable when this returns."""
    transport = open_transport(config)
    try:
        producer = transport.producer()
        try:
            producer.send([lb.message() for lb in labels])
            producer.flush()
        finally:
            producer.close()
    finally:
        transport.close()
