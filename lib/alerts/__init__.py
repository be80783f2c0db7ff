"""Notifications of anomaly events (lib.detect.events) to operators who are not looking at the
page: channels (`channels`), the routes and secrets in `[alerts]` (`settings`), a durable outbox
(`outbox`) and the notifier's loop (`notifier`), run by `python -m workers.notifier`."""
