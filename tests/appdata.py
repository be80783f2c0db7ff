"""A prepared DuckDB for the app's tests, the browser test and the README screenshots: three
sessions on three days (the newest one live, ending now), three sensors, injected spikes and dips
with their truth, verdicts of two detectors and a threshold rule, rejects, labels, and a recorded
gap in each session with no reading inside it (the live one's, 30 s, within the last 5 minutes).

Written through lib.store.writer like the store writes it. Deterministic for a given `now`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np

from lib.messages import SessionEnd, SessionGap, SessionStart
from lib.store.batch import Batch
from lib.store.schema import init_db
from lib.store.writer import write_batch

SENSORS = {"humidite": (55.0, 6.0, 0.4), "temperature": (21.0, 2.0, 0.12), "pression": (1013.0, 3.0, 0.3)}
DETECTORS = ("dbscan", "iforest")
RULE = "rule:range"
WINDOW = 20
#: per session, a recorded gap with no reading inside it: (from, to) in steps after its start, reason
GAPS = [(100, 104, "unplugged"), (100, 104, "unplugged"), (420, 450, "port lost")]


#: the rules the prepared "rule:range" states follow, as VIGIE_DETECTION_RULES would give them
RULES = {name: {"max": round(base + 4 * amp, 1)} for name, (base, amp, _) in SENSORS.items()}


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=timezone.utc).timestamp() * 1e6)


def prepare(
    db_path, now: datetime | None = None, per_sensor: int = 600, step_s: float = 1.0, hostile: bool = True
) -> dict:
    """Write the data; returns what the tests check against: session ids and their start times."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    init_db(db_path)
    rng = np.random.default_rng(7)
    sessions = [
        ("20261125T080000-a1", now - timedelta(days=3), "/dev/ttyACM0"),
        ("20261127T140000-b2", now - timedelta(days=1), "/dev/ttyACM0"),
        ("live-c3", now - timedelta(seconds=per_sensor * step_s), "/dev/pts/4"),
    ]
    batch = Batch()
    for si, (session, start, port) in enumerate(sessions):
        batch.sessions.append(SessionStart(session=session, port=port, baud=9600, host="serre", ts_us=_us(start)))
        seq = 0
        gap = GAPS[si]
        gap_start, gap_end = start + timedelta(seconds=gap[0] * step_s), start + timedelta(seconds=gap[1] * step_s)
        for i in range(per_sensor):
            for k, (sensor, (base, amp, noise)) in enumerate(SENSORS.items()):
                seq += 1
                t = start + timedelta(seconds=i * step_s + k * step_s / len(SENSORS))
                unplugged = gap_start <= t < gap_end  # drawn like the others (same data after it), not stored
                value = base + amp * math.sin(2 * math.pi * i / 300) + rng.normal(0, noise)
                injected = i > 40 and i % 37 == (5 + 3 * k) % 37
                if injected:
                    kind = "spike" if (i // 37) % 2 == 0 else "dip"
                    value += (5 if kind == "spike" else -5) * amp
                    if not unplugged:
                        batch.truth[(f"sim-{session}", sensor, kind, _us(t))] = _us(t)
                if not unplugged:
                    batch.readings[(session, seq)] = (sensor, _us(t), round(value, 2))
                for det in DETECTORS:
                    if i < WINDOW:
                        state, score = "initializing", None
                    else:
                        noise_flag = rng.random() < (0.01 if det == "dbscan" else 0.02)
                        caught = injected and rng.random() < (0.9 if det == "dbscan" else 0.75)
                        state = "anomaly" if caught or noise_flag else "normal"
                        score = round(float(0.7 + 0.3 * rng.random() if state == "anomaly" else 0.4 * rng.random()), 3)
                    if not unplugged:
                        batch.states[(session, seq, det)] = (sensor, _us(t), state, score)
                limit = base + 4 * amp  # [detection.rules.<sensor>] max (see RULES)
                if not unplugged:
                    batch.states[(session, seq, RULE)] = (
                        sensor,
                        _us(t),
                        "anomaly" if value > limit else "normal",
                        1.0 if value > limit else 0.0,
                    )
        end = start + timedelta(seconds=per_sensor * step_s)
        if si < 2:
            batch.sessions.append(SessionEnd(session=session, ts_us=_us(end)))
        batch.sessions.append(SessionGap(session=session, start_us=_us(gap_start), end_us=_us(gap_end), reason=gap[2]))
        for j in range(2 + si):
            t = start + timedelta(seconds=50 + j)
            batch.rejects[(session, 100_000 + j)] = (_us(t), "not_a_number", "humidite!4x.2")
    # a sensor name that would be a formula in a spreadsheet, with a flagged reading
    t = now - timedelta(seconds=30)
    if hostile:
        batch.readings[("live-c3", 99_999)] = ("=cmd|' /C calc'!A0", _us(t), -3.5)
        batch.states[("live-c3", 99_999, "dbscan")] = ("=cmd|' /C calc'!A0", _us(t), "anomaly", 0.99)
    # two operator labels on the oldest session: a false alarm rejected, a missed anomaly marked
    old = sessions[0][0]
    flagged = sorted(k for k, v in batch.states.items() if k[0] == old and k[2] == "iforest" and v[2] == "anomaly")
    normal = sorted(k for k, v in batch.states.items() if k[0] == old and k[2] == "dbscan" and v[2] == "normal")
    for (session, seq, det), verdict in ((flagged[0], "rejected"), (normal[100], "missed")):
        sensor, ts_us = batch.readings[(session, seq)][:2]
        batch.labels[(session, seq)] = (
            sensor,
            ts_us,
            verdict,
            det if verdict == "rejected" else None,
            "prepared",
            _us(now),
        )
    write_batch(db_path, batch)
    return {"now": now, "sessions": {s: start for s, start, _ in sessions}}
