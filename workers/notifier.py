"""The notifier: `python -m workers.notifier`. Tells operators about anomaly events on the
channels `[alerts]` configures (lib/alerts/), from a durable outbox in the data folder."""

from __future__ import annotations

import argparse
import sys

from lib.alerts.notifier import Notifier, outbox_path
from lib.alerts.settings import AlertsConfigError, load_alerts
from lib.config import ConfigError, load_config
from lib.messages import EVENTS
from lib.runtime import setup_logging, stop_event
from lib.supervision import die_with_supervisor
from lib.transport import open_transport


def main(argv=None) -> int:
    log = setup_logging("notifier")
    die_with_supervisor()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--group", default="notifier", help="consumer group (its own position on the events)")
    args = ap.parse_args(argv)
    try:
        config = load_config()
        settings = load_alerts(config)
    except (ConfigError, AlertsConfigError) as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    transport = open_transport(config)
    consumer = transport.consumer(args.group, topics=[EVENTS])
    notifier = Notifier(settings, outbox_path(config), consumer)
    if settings.channels:
        log.info("notifying %s", ", ".join(f"{c.name} ({c.kind})" for c in settings.channels.values()))
    else:
        log.info("no [alerts.channels]: events are followed, nothing is sent")
    try:
        notifier.run(stop)
        log.info("stopped after %d deliveries", notifier.sent)
    finally:
        notifier.close()
        consumer.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
