"""Threshold rules: what an operator knows about a sensor without any learning.

Per sensor, from `[detection.rules."*"]` (every sensor) then `[detection.rules.<sensor>]`:
- `min`, `max`: the reading must stay within them                       -> state row "rule:range"
- `max_rate`: the change from the previous reading, per second of the
  readings' timestamps, must stay within it                             -> "rule:rate"
- `stuck_n`: N identical readings in a row mean a stuck sensor          -> "rule:stuck"
- `no_data_s`: a sensor silent this many seconds is an anomaly          -> "rule:no_data"

Rule hits are stored like detector states (detector name "rule:<name>", score 1.0 on a hit and
0.0 otherwise), only for the rules configured for the sensor. "no_data" cannot ride on a reading,
since none arrives: the detector worker emits it once per silence as a state row keyed on the
last reading before the silence (its session, seq and time), so the chart can draw the silent
span from that reading to the next. `rules_for(config, sensor)` is what the app draws as bands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lib.states import STATE_ANOMALY, STATE_INITIALIZING, STATE_NORMAL, state_letters

RULE_KEYS = ("min", "max", "max_rate", "stuck_n", "no_data_s")


@dataclass(frozen=True)
class Rules:
    """One sensor's rules; None (or 0 for the counts and seconds) means the rule is off."""
    min: float | None = None
    max: float | None = None
    max_rate: float | None = None      # units per second
    stuck_n: int = 0                   # identical readings in a row
    no_data_s: float = 0.0             # seconds of silence

    @property
    def active(self) -> list[str]:
        """Names of the state rows the readings get (no_data is emitted apart)."""
        out = []
        if self.min is not None or self.max is not None:
            out.append("rule:range")
        if self.max_rate is not None:
            out.append("rule:rate")
        if self.stuck_n:
            out.append("rule:stuck")
        return out

    @property
    def history_needed(self) -> int:
        """Readings of history that restore the rules' memory after a restart."""
        return max(self.stuck_n - 1, 1 if self.max_rate is not None else 0, 0)


def _check(where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    bad = set(raw) - set(RULE_KEYS)
    if bad:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(RULE_KEYS)})")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} {key}: expected a number, got {value!r}")
        if key == "stuck_n":
            if value != int(value) or value < 0 or value == 1:
                raise ValueError(f"{where} stuck_n: expected a whole number of readings >= 2 (0: off), got {value!r}")
            value = int(value)
        elif key in ("max_rate", "no_data_s") and value < 0:
            raise ValueError(f"{where} {key}: must not be negative, got {value!r}")
        out[key] = value
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise ValueError(f"{where}: min {out['min']} is above max {out['max']}")
    return out


def rules_for(config, sensor: str) -> Rules:
    """The rules of `sensor`: `[detection.rules."*"]`, then `[detection.rules.<sensor>]` on top.
    Raises ValueError naming a bad key or value."""
    tables = config.detection.rules
    merged: dict[str, Any] = {}
    for name in ("*", sensor):
        if name in tables:
            if not isinstance(tables[name], Mapping):
                raise ValueError(f"[detection.rules.{name}]: expected a table")
            merged.update(_check(f'[detection.rules."{name}"]', tables[name]))
    if merged.get("max_rate") == 0:
        merged.pop("max_rate")  # 0 reads as "off", like the counts and seconds
    if "min" in merged and "max" in merged and merged["min"] > merged["max"]:
        raise ValueError(f"[detection.rules.{sensor}]: min {merged['min']} is above max {merged['max']}")
    return Rules(**merged)


def check_rules(config) -> None:
    for name in config.detection.rules:
        rules_for(config, name)


class RuleState:
    """The little memory the rules need for one sensor: the previous reading and the run of
    identical readings. Picklable, rebuilt from history like a detector's window."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.prev: float | None = None
        self.prev_ts: int | None = None
        self.run = 0           # identical readings in a row, ending with `prev`

    def learn(self, x: float, ts_us: int | None = None) -> None:
        self.run = self.run + 1 if self.prev is not None and x == self.prev else 1
        self.prev, self.prev_ts = x, ts_us

    def judge(self, x: float, ts_us: int | None = None) -> list[tuple[str, str, float | None]]:
        """[(rule name, state, score)] for `x`, then learns it."""
        r = self.rules
        out: list[tuple[str, str, float | None]] = []
        if r.min is not None or r.max is not None:
            hit = (r.min is not None and x < r.min) or (r.max is not None and x > r.max)
            out.append(_row("rule:range", hit))
        if r.max_rate is not None:
            if self.prev is None:
                out.append(("rule:rate", STATE_INITIALIZING, None))
            else:
                # per second of the readings' own clock; one second per reading without timestamps
                dt = (ts_us - self.prev_ts) / 1e6 if ts_us is not None and self.prev_ts is not None else 1.0
                step = abs(x - self.prev)
                out.append(_row("rule:rate", step > r.max_rate * dt if dt > 0 else step > 0))
        if r.stuck_n:
            run = self.run + 1 if self.prev is not None and x == self.prev else 1
            out.append(_row("rule:stuck", run >= r.stuck_n))
        self.learn(x, ts_us)
        return out

    def judge_columns(self, values, ts_us=None) -> dict[str, tuple[str, list[float | None]]]:
        """`judge` for many readings in one numpy pass: {rule name: (states as letters of
        lib.states.STATE_CODES, scores)}, then learns them. The worker's way (per-reading Python
        was a tenth of its time at 20,000 readings/s)."""
        r = self.rules
        x = np.asarray(values, dtype=float)
        n = len(x)
        out: dict[str, tuple[str, list[float | None]]] = {}
        if n == 0:
            return out
        had_prev = self.prev is not None
        prev = np.concatenate(([self.prev if had_prev else np.nan], x[:-1]))
        if r.min is not None or r.max is not None:
            hit = np.zeros(n, dtype=bool)
            if r.min is not None:
                hit |= x < r.min
            if r.max is not None:
                hit |= x > r.max
            out["rule:range"] = _columns(hit)
        if r.max_rate is not None:
            if ts_us is not None:
                t = np.asarray(ts_us, dtype=float)
                dt = np.diff(t, prepend=np.nan if self.prev_ts is None else float(self.prev_ts)) / 1e6
                dt[np.isnan(dt)] = 1.0     # no previous time: one second per reading, as `judge`
            else:
                dt = np.ones(n)
            step = np.abs(x - prev)
            states, scores = _columns(np.where(dt > 0, step > r.max_rate * dt, step > 0))
            if not had_prev:
                states, scores[0] = "i" + states[1:], None
            out["rule:rate"] = (states, scores)
        # the run of identical readings ending at each one (`learn`'s count, carried across calls)
        same = x == prev
        idx = np.arange(n)
        last_break = np.maximum.accumulate(np.where(same, -1, idx))
        run = np.where(last_break < 0, self.run + idx + 1, idx - last_break + 1)
        if r.stuck_n:
            out["rule:stuck"] = _columns(run >= r.stuck_n)
        self.prev, self.run = float(x[-1]), int(run[-1])
        self.prev_ts = int(ts_us[-1]) if ts_us is not None else None
        return out


def _columns(hit: np.ndarray) -> tuple[str, list[float]]:
    """States as letters (lib.states.STATE_CODES) and scores."""
    return state_letters(hit), hit.astype(float).tolist()


def _row(name: str, hit: bool) -> tuple[str, str, float]:
    return (name, STATE_ANOMALY if hit else STATE_NORMAL, 1.0 if hit else 0.0)
