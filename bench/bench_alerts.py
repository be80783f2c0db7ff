"""Notification latency, end to end: `python -m bench.bench_alerts`.

The whole system under supervisord on the embedded default (`make run`'s programs, the notifier
among them), the simulated board writing `--sensors` sensors at `--rate` lines/s with a spike on
one of them every `--every` seconds, and a real webhook receiver on 127.0.0.1. For each "opened"
notification: from the flagged reading's arrival (its receive stamp, the event's start) to the
moment the receiver has the message. Events close after 1 s of quiet and the channel's grouping
interval is 0, so every event is told on its own: grouping (at most one message per channel per
`[alerts] group_interval_s`, 60 s by default) delays by design every message after a channel's
first in that interval; the first one is what this measures. Then a storm: `--storm` sensors
spiking at once, which the default grouping tells in one message.

The original program (docs/origins.md) had no notifications: there is nothing to compare with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.receivers import WebhookReceiver
from tests.system import System, wait_for

# A raw robust z-score (not calibrated: its own score z / (z + 3)) over 50 readings, flagging at 12
# deviations: the injected 60-deviation spikes, and no normal reading.
RAW_ZSCORE = json.dumps({"zscore": {"window": 50, "threshold": 0.8, "calibrate": False}})


def sensors_toml(sensors: int) -> list[str]:
    lines = ["quiet_s = 12"]
    for k in range(sensors):
        lines += [f"[sensors.s{k:02d}]", f"base = {20 + k}", "amplitude = 0.0", "noise = 0.1"]
    return lines


def scenario(sensors: int, every_s: float) -> str:
    return (
        "\n".join(
            sensors_toml(sensors)
            + ["[[anomalies]]", 'kind = "spike"', 'sensor = "*"', f"every_s = {every_s}", "magnitude = 60"]
        )
        + "\n"
    )


def run(folder: Path, sensors: int, rate: float, every_s: float, seconds: float, group_interval: float):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scenario.toml"
    path.write_text(scenario(sensors, every_s))
    receiver = WebhookReceiver().start()
    env = {
        "VIGIE_SIMULATOR_SCENARIO": str(path),
        "VIGIE_SIMULATOR_RATE": str(rate),
        "VIGIE_DETECTION_DETECTORS": "zscore",
        "VIGIE_DETECTION_PARAMS": RAW_ZSCORE,
        # no rules: the board stops at the end of the run, and its silence would be an event too
        "VIGIE_DETECTION_RULES": "{}",
        "VIGIE_EVENTS_QUIET_S": "1",
        "VIGIE_ALERTS_CHANNELS": json.dumps({"hook": {"kind": "webhook", "url": receiver.url}}),
        "VIGIE_ALERTS_GROUP_INTERVAL_S": str(group_interval),
    }
    try:
        with System(folder, env) as system:
            wait_for(lambda: receiver.received, timeout=120, what="a first notification")
            time.sleep(seconds)
            system.stop()
    finally:
        receiver.stop()
    latencies = []
    for r in receiver.received:
        for n in r["body"]["notifications"]:
            if n["kind"] == "opened":
                latencies.append(r["at"] - n["time_us"] / 1e6)
    return latencies, receiver.received


def storm(folder: Path, sensors: int, rate: float):
    """Every sensor goes wrong at once, default grouping: how many messages in the first minute,
    and the first one's latency. Each sensor's spikes fall due every 0.01 s from the end of the
    quiet start, and the board stops half a second later: half a second of high readings on every
    sensor, one event each."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "storm.toml"
    lines = sensors_toml(sensors)
    for k in range(sensors):
        lines += ["[[anomalies]]", 'kind = "spike"', f'sensor = "s{k:02d}"', "every_s = 0.01", "magnitude = 60"]
    path.write_text("\n".join(lines) + "\n")
    receiver = WebhookReceiver().start()
    env = {
        "VIGIE_SIMULATOR_SCENARIO": str(path),
        "VIGIE_SIMULATOR_RATE": str(rate),
        "VIGIE_SIMULATOR_COUNT": str(int(rate * 12.5)),  # stop right after the storm's round
        "VIGIE_DETECTION_DETECTORS": "zscore",
        "VIGIE_DETECTION_PARAMS": RAW_ZSCORE,
        # no rules: the board stops at the end of the run, and its silence would be an event too
        "VIGIE_DETECTION_RULES": "{}",
        "VIGIE_EVENTS_QUIET_S": "1",
        "VIGIE_ALERTS_CHANNELS": json.dumps({"hook": {"kind": "webhook", "url": receiver.url}}),
    }
    try:
        with System(folder, env) as system:
            wait_for(lambda: receiver.received, timeout=120, what="the storm's message")
            time.sleep(5)
            system.stop()
    finally:
        receiver.stop()
    first = receiver.received[0]
    opened = [n for n in first["body"]["notifications"] if n["kind"] == "opened"]
    return len(receiver.received), len(opened), first["at"] - min(n["time_us"] for n in opened) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--rate", type=float, default=100.0, help="lines/s, all sensors together")
    ap.add_argument("--every", type=float, default=1.5, help="seconds between spikes (on any sensor)")
    ap.add_argument("--seconds", type=float, default=90.0, help="measured span")
    ap.add_argument("--storm", type=int, default=20, help="sensors spiking at once (0: skip)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        lat, received = run(Path(tmp) / "latency", args.sensors, args.rate, args.every, args.seconds, 0.0)
        storm_result = storm(Path(tmp) / "storm", args.storm, args.storm * 10.0) if args.storm else None
    if len(lat) < 2:
        print(f"only {len(lat)} opened notification(s) received: no figures")
        return 1
    q = statistics.quantiles(lat, n=100, method="inclusive")  # within the sample: p99 <= max
    print(
        f"{args.sensors} sensors at {args.rate:.0f} lines/s, a spike every {args.every:g} s, {args.seconds:.0f} s; "
        "embedded transport; webhook on 127.0.0.1"
    )
    print(f"{'notifications':>14} {'messages':>9} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'max s':>7}")
    print(f"{len(lat):>14} {len(received):>9} {q[49]:>7.2f} {q[94]:>7.2f} {q[98]:>7.2f} {max(lat):>7.2f}")
    print("(from the flagged reading's receive stamp to the webhook receiving the message)")
    if storm_result:
        messages, n, first = storm_result
        rest = "" if n == args.storm else " (the others follow together, a minute after it)"
        print(
            f"storm: {args.storm} sensors going wrong at once, default grouping -> {messages} message(s) in the "
            f"first seconds, carrying {n} opened notification(s), {first:.2f} s after the first flagged "
            f"reading{rest}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
