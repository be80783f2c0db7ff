"""Threshold rules: what an operator knows about a sensor without any learning.

Per sensor, from `[detection.rules."*"]` (every sensor) then `[detection.rules.<sensor>]`:
- `min`, `max`: the reading must stay within them                       -> state row "rule:range"
- `max_rate`: the change from the previous reading, per second of the
  readings' timestamps, must stay within it                             -> "rule:rate"
- `stuck_n`: N identical readings in a row mean a stuck sensor          -> "rule:stuck"
- `stuck_factor`: the same, learnt: a run of identical readings more than
  this many times the longest run of the sensor's last 2,000 readings
  (and at least 10): a quantised sensor that often repeats a value
  needs a longer run than a noisy one                                   -> "rule:stuck"
- `no_data_s`: a sensor silent this many seconds is an anomaly          -> "rule:no_data"
- `no_data_factor`: the same, learnt: silent for this many of the
  sensor's usual intervals (the median of its last 64), at least 1 s:
  a board sending twice a second and one sending once a minute each
  get their own limit (`no_data_s`, when set, takes precedence)         -> "rule:no_data"

Rule hits are stored like detector states (detector name "rule:<name>", score 1.0 on a hit and
0.0 otherwise), only for the rules configured for the sensor. "no_data" cannot ride on a reading,
since none arrives: the detector worker emits it once per silence as a state row keyed on the
last reading before the silence (its session, seq and time), so the chart can draw the silent
span from that reading to the next. `rules_for(config, sensor)` is what the app draws as bands.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lib.states import STATE_CODES, state_letters

RULE_KEYS = ("min", "max", "max_rate", "stuck_n", "stuck_factor", "no_data_s", "no_data_factor")
#: readings whose runs of identical values set `stuck_factor`'s bar, and the shortest run it flags
STUCK_MEMORY, STUCK_MIN = 2000, 10
#: intervals whose median is a sensor's usual one, and the shortest silence `no_data_factor` flags
INTERVALS, NO_DATA_MIN_S = 64, 1.0


@dataclass(frozen=True)
class Rules:
    """One sensor's rules; None (or 0 for the counts and seconds) means the rule is off."""

    min: float | None = None
    max: float | None = None
    max_rate: float | None = None  # units per second
    stuck_n: int = 0  # identical readings in a row
    stuck_factor: float = 0.0  # times the longest recent run of identical readings
    no_data_s: float = 0.0  # seconds of silence
    no_data_factor: float = 0.0  # times the sensor's usual interval between readings

    @property
    def active(self) -> list[str]:
        """Names of the state rows the readings get (no_data is emitted apart)."""
        out = []
        if self.min is not None or self.max is not None:
            out.append("rule:range")
        if self.max_rate is not None:
            out.append("rule:rate")
        if self.stuck_n or self.stuck_factor:
            out.append("rule:stuck")
        return out

    @property
    def watches_silence(self) -> bool:
        return bool(self.no_data_s or self.no_data_factor)

    @property
    def history_needed(self) -> int:
        """Readings of history that restore the rules' memory after a restart."""
        return max(
            self.stuck_n - 1,
            1 if self.max_rate is not None else 0,
            0,
            STUCK_MEMORY if self.stuck_factor else 0,
            INTERVALS + 1 if self.no_data_factor else 0,
        )


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
        elif key in ("max_rate", "no_data_s", "stuck_factor", "no_data_factor") and value < 0:
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
    """The little memory the rules need for one sensor: the previous reading, the run of identical
    readings, the recent runs (`stuck_factor`) and intervals (`no_data_factor`). Picklable,
    rebuilt from history like a detector's window."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.prev: float | None = None
        self.prev_ts: int | None = None
        self.run = 0  # identical readings in a row, ending with `prev`
        self.seen = 0
        # completed runs (end index, length), lengths decreasing: the longest of the last
        # STUCK_MEMORY readings at the front
        self._runs: deque[tuple[int, int]] = deque()
        self._gaps: deque[int] = deque(maxlen=INTERVALS)  # µs between readings

    def learn(self, x: float, ts_us: int | None = None) -> None:
        self.judge_columns([x], None if ts_us is None else [ts_us])

    def judge(self, x: float, ts_us: int | None = None) -> list[tuple[str, str, float | None]]:
        """[(rule name, state, score)] for `x`, then learns it."""
        cols = self.judge_columns([x], None if ts_us is None else [ts_us])
        return [(name, STATE_CODES[codes[0]], scores[0]) for name, (codes, scores) in cols.items()]

    def no_data_limit_s(self) -> float:
        """Seconds of silence that make this sensor silent (0: the rule is off or not learnt yet)."""
        r = self.rules
        if r.no_data_s:
            return r.no_data_s
        if r.no_data_factor and len(self._gaps) >= 8:
            return max(NO_DATA_MIN_S, r.no_data_factor * float(np.median(self._gaps)) / 1e6)
        return 0.0

    def judge_columns(self, values, ts_us=None) -> dict[str, tuple[str, list[float | None]]]:
        """{rule name: (states as letters of lib.states.STATE_CODES, scores)} for many readings in
        one numpy pass (per-reading Python was a tenth of the worker's time at 20,000 readings/s),
        then learns them."""
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
        t = np.asarray(ts_us, dtype=float) if ts_us is not None else None
        if r.max_rate is not None:
            if t is not None:
                dt = np.diff(t, prepend=np.nan if self.prev_ts is None else float(self.prev_ts)) / 1e6
                dt[np.isnan(dt)] = 1.0  # no previous time: one second per reading
            else:
                dt = np.ones(n)
            step = np.abs(x - prev)
            states, scores = _columns(np.where(dt > 0, step > r.max_rate * dt, step > 0))
            if not had_prev:
                states, scores[0] = "i" + states[1:], None
            out["rule:rate"] = (states, scores)
        # the run of identical readings ending at each one, carried across calls
        same = x == prev
        idx = np.arange(n)
        last_break = np.maximum.accumulate(np.where(same, -1, idx))
        run = np.where(last_break < 0, self.run + idx + 1, idx - last_break + 1)
        if r.stuck_n or r.stuck_factor:
            hit = run >= r.stuck_n if r.stuck_n else np.zeros(n, dtype=bool)
            if r.stuck_factor:
                hit |= self._stuck_learnt(same, run)
            out["rule:stuck"] = _columns(hit)
        if t is not None and r.no_data_factor:
            gaps = np.diff(t, prepend=np.nan if self.prev_ts is None else float(self.prev_ts))
            self._gaps.extend(int(g) for g in gaps[-INTERVALS:] if g > 0)
        self.prev, self.run = float(x[-1]), int(run[-1])
        self.prev_ts = int(ts_us[-1]) if ts_us is not None else None
        self.seen += n
        return out

    def _stuck_learnt(self, same: np.ndarray, run: np.ndarray) -> np.ndarray:
        """`stuck_factor`'s verdicts: each reading's run against the longest run completed in the
        STUCK_MEMORY readings before it (reading by reading, so batches change nothing)."""
        hit = np.zeros(len(run), dtype=bool)
        runs = self._runs
        for i in range(len(run)):
            g = self.seen + i
            if not same[i] and (i > 0 or self.prev is not None):
                self._push_run(g - 1, int(run[i - 1]) if i else self.run)
            while runs and runs[0][0] <= g - STUCK_MEMORY:
                runs.popleft()
            if run[i] >= STUCK_MIN:
                hit[i] = run[i] > self.rules.stuck_factor * (runs[0][1] if runs else 0)
        return hit

    def _push_run(self, end: int, length: int) -> None:
        while self._runs and self._runs[-1][1] <= length:
            self._runs.pop()
        self._runs.append((end, length))


def _columns(hit: np.ndarray) -> tuple[str, list[float]]:
    """States as letters (lib.states.STATE_CODES) and scores."""
    return state_letters(hit), hit.astype(float).tolist()
