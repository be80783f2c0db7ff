"""The notifier: reads `_vigie.events` in its own consumer group, files notifications in the
outbox, and delivers them.

Two threads share the work. Intake polls the transport, files each message's notifications in one
outbox transaction and only then commits its transport position (at-least-once; the outbox's keys
make a replay add nothing). Delivery groups what waits into messages (`outbox.group_due`) and
tries each due message; a failed try is retried with a doubling wait up to `retry_max_s`, until
`give_up_s` after it was made, or failed at once when the receiver refused it for good. One slow
channel never holds up intake: the transport and the outbox keep everything meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time

from lib.alerts import outbox
from lib.alerts.channels import DeliveryError, send
from lib.alerts.settings import AlertSettings

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0


def retry_wait(attempts: int, cap: float) -> float:
    """1, 2, 4, ... seconds after the 1st, 2nd, 3rd failed try, at most `cap`."""
    return min(cap, RETRY_FIRST_S * 2 ** max(0, attempts - 1))


class Notifier:
    def __init__(self, settings: AlertSettings, outbox_path, consumer, sender=send, clock=time.time):
        self.settings, self.consumer, self.sender, self.clock = settings, consumer, sender, clock
        self.outbox_path = outbox_path
        self.intake_conn = outbox.connect(outbox_path)
        self.deliver_conn = outbox.connect(outbox_path)
        self.planner = outbox.Planner(self.intake_conn, settings, clock)
        self.wake = threading.Event()
        self.sent = 0

    # -- intake ----------------------------------------------------------------------------------
    def intake_once(self, timeout: float = 0.2) -> int:
        messages = self.consumer.poll(1000, timeout)
        if not messages:
            return 0
        added = 0
        with outbox.transaction(self.intake_conn):
            for m in messages:
                try:
                    added += self.planner.add(m.json())
                except (KeyError, ValueError, TypeError) as exc:
                    log.error("skipping malformed event message at offset %s: %s", m.offset, exc)
        self.consumer.commit()
        if added:
            self.wake.set()
        return len(messages)

    def run_intake(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.intake_once()

    # -- delivery --------------------------------------------------------------------------------
    def deliver_once(self) -> float | None:
        """Group and try what is due; returns when something next falls due."""
        now = self.clock()
        _, next_group = outbox.group_due(self.deliver_conn, self.settings, now)
        for key, channel_name, notes, attempts, created in outbox.due_deliveries(self.deliver_conn, now):
            channel = self.settings.channels.get(channel_name)
            if channel is None:
                outbox.record_failure(self.deliver_conn, key, f"channel {channel_name!r} is no longer configured", None)
                continue
            outbox.record_try(self.deliver_conn, key)
            try:
                self.sender(channel, key, notes, self.settings.page_url, self.settings.timeout_s)
            except DeliveryError as exc:
                tries = attempts + 1
                now = self.clock()
                if exc.permanent or now - created >= self.settings.give_up_s:
                    log.error("%s: delivery %s failed for good after %d tries: %s", channel_name, key, tries, exc)
                    outbox.record_failure(self.deliver_conn, key, str(exc), None)
                else:
                    wait = retry_wait(tries, self.settings.retry_max_s)
                    (log.warning if tries == 1 else log.info)(
                        "%s: delivery %s failed (%s); try %d in %.0fs", channel_name, key, exc, tries + 1, wait
                    )
                    outbox.record_failure(self.deliver_conn, key, str(exc), now + wait)
                continue
            outbox.record_sent(self.deliver_conn, key, self.clock())
            self.sent += 1
            log.info(
                "%s: sent %d notification(s) as %s%s",
                channel_name,
                len(notes),
                key,
                f" after {attempts + 1} tries" if attempts else "",
            )
        retry = outbox.next_try(self.deliver_conn)
        return min([t for t in (next_group, retry) if t is not None], default=None)

    def run_delivery(self, stop: threading.Event) -> None:
        while not stop.is_set():
            due = self.deliver_once()
            wait = 1.0 if due is None else max(0.0, min(1.0, due - self.clock()))
            self.wake.wait(wait)
            self.wake.clear()

    def run(self, stop: threading.Event) -> None:
        """Both loops until `stop`; a try in flight finishes first."""
        delivery = threading.Thread(target=self.run_delivery, args=(stop,), name="delivery", daemon=True)
        delivery.start()
        try:
            self.run_intake(stop)
        finally:
            self.wake.set()
            delivery.join(timeout=self.settings.timeout_s + 5)

    def close(self) -> None:
        self.intake_conn.close()
        self.deliver_conn.close()


def outbox_path(config):
    return config.data_dir / "alerts.sqlite"
