"""What the Events view sends: an operator's acknowledgement or resolution of an event, and,
in the same step, labels on the event's flagged readings.

Like labels (lib.page.labels), these travel on the transport to the store, the single writer:
the action on `_vigie.events` (where the notifier also hears of an operator's resolution), the
labels on `_vigie.labels`, both in one flush.
"""

from __future__ import annotations

import time

from lib.messages import ACK, ACTIONS, RESOLVE, EventAction
from lib.page.labels import CONFIRMED, REJECTED, Label
from lib.transport import open_transport

__all__ = ["ACK", "RESOLVE", "CONFIRMED", "REJECTED", "action_messages", "send_actions"]


def action_messages(
    event_ids,
    action: str,
    by: str,
    note: str | None = None,
    verdict: str | None = None,
    readings=None,
    made_us: int | None = None,
) -> list:
    """The messages for `action` ("ack" or "resolve") on `event_ids` by `by`, and with `verdict`
    (confirmed or rejected) a label for each of `readings` (rows with session_id, seq, sensor,
    ts, detector)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if not by or not by.strip():
        raise ValueError("say who you are: an acknowledgement records who made it")
    if verdict not in (None, CONFIRMED, REJECTED):
        raise ValueError(f"an event's readings are labelled {CONFIRMED} or {REJECTED}, not {verdict!r}")
    made_us = made_us if made_us is not None else time.time_ns() // 1000
    out = [EventAction(e, action, by.strip(), note or None, made_us).message() for e in event_ids]
    if verdict is not None and readings is not None:
        for r in readings.itertuples():
            label = Label(
                r.session_id,
                int(r.seq),
                r.sensor,
                r.ts.to_pydatetime(),
                verdict,
                r.detector,
                note or f"event {action} by {by.strip()}",
            )
            out.append(label.message(made_us))
    return out


def send_actions(config, messages: list) -> None:
    """Durable once this returns (one flush: the actions and their labels together)."""
    transport = open_transport(config)
    try:
        producer = transport.producer()
        try:
            producer.send(messages)
            producer.flush()
        finally:
            producer.close()
    finally:
        transport.close()
