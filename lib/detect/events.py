"""Anomaly events: one run of flagged readings on one sensor is one event.

This is the one definition of an event. The detector worker runs a tracker per sensor and sends
each event's changes on the internal topic `_vigie.events`; the store files them (table `events`),
the page draws them and the notifier tells the operator about them.

A reading is *flagged* by the sensor's decision rule: at least `min_agree` of its detectors say
"anomaly" (at most as many as the sensor has), or any threshold rule fires. The
first flagged reading opens an event; each further flagged reading extends it; it closes once the
sensor has been quiet for `quiet_s` seconds of the readings' own clock and, when `quiet_n` > 0,
`quiet_n` unflagged readings in a row (both, when both are set). A silent sensor ("rule:no_data")
opens or extends an event that stays open until readings come back; the quiet period counts from
the first reading after the silence.

An event records its start and end (the first and the last flagged reading), its peak (the flagged
reading with the highest score among the detectors and rules that flagged it; rules score 1.0;
among equal scores, the reading farthest from the last unflagged one before the event),
the detectors and rules that agreed on its readings, how many readings were flagged, and a
severity that only rises while the event is open (see `Policy`). Its id is
`<session>:<sensor>:<start seq>`: judging the same readings again gives the same events, so a
replay updates them instead of adding new ones.

>>> p = Policy(quiet_s=1.0)
>>> t = EventTracker("temp", p)
>>> t.feed("s1", 1, 0, 20.0, {})
[]
>>> [(e.id, e.closed) for e in t.feed("s1", 2, 100_000, 90.0, {"dbscan": 0.9, "iforest": 0.8})]
[('s1:temp:2', False)]
>>> t.feed("s1", 3, 200_000, 20.1, {})
[]
>>> e, = t.feed("s1", 4, 1_200_000, 20.0, {})
>>> e.closed, e.peak_value, e.members, e.severity
(True, 90.0, ('dbscan', 'iforest'), 'critical')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from lib.detect.plan import sensor_plan
from lib.messages import EVENTS, json_message

RULE_PREFIX = "rule:"
NO_DATA = "rule:no_data"

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
SEVERITY_SOURCES = ("agree", "score", "rule")


@dataclass(frozen=True)
class Policy:
    """How a sensor's flagged readings make events, and how severe they are.

    Severity starts at `base_severity` and is "critical" when one of the `severity_from` sources
    says so: "agree" (at least `critical_agree` detectors flagged one reading), "score" (the peak
    score reached `critical_score`; 0 turns it off), "rule" (a rule in `critical_rules` fired,
    named without the "rule:" prefix)."""

    min_agree: int = 1
    quiet_s: float = 30.0
    quiet_n: int = 0
    base_severity: str = "warning"
    severity_from: tuple[str, ...] = SEVERITY_SOURCES
    critical_agree: int = 2
    critical_score: float = 0.0
    critical_rules: tuple[str, ...] = ("range", "no_data")

    def severity(self, max_agree: int, peak_score: float, members: Sequence[str]) -> str:
        critical = (
            ("agree" in self.severity_from and max_agree >= self.critical_agree)
            or ("score" in self.severity_from and self.critical_score > 0 and peak_score >= self.critical_score)
            or (
                "rule" in self.severity_from
                and any(m[len(RULE_PREFIX) :] in self.critical_rules for m in members if m.startswith(RULE_PREFIX))
            )
        )
        return "critical" if critical else self.base_severity


POLICY_KEYS = tuple(f.name for f in dataclasses.fields(Policy))


def check_policy(where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Policy keyword arguments from a configuration table; ValueError naming a bad key or value."""
    bad = set(raw) - set(POLICY_KEYS)
    if bad:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(POLICY_KEYS)})")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(Policy, key)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where} {key}: expected a list of names, got {value!r}")
            value = tuple(value)
            if key == "severity_from" and set(value) - set(SEVERITY_SOURCES):
                raise ValueError(
                    f"{where} severity_from: unknown source(s) "
                    f"{', '.join(sorted(set(value) - set(SEVERITY_SOURCES)))} "
                    f"(known: {', '.join(SEVERITY_SOURCES)})"
                )
        elif isinstance(default, str):
            if value not in SEVERITIES:
                raise ValueError(f"{where} {key}: must be one of {', '.join(SEVERITIES)}, got {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{where} {key}: expected a number >= 0, got {value!r}")
            if isinstance(default, int):
                if value != int(value):
                    raise ValueError(f"{where} {key}: expected a whole number, got {value!r}")
                value = int(value)
            else:
                value = float(value)
        out[key] = value
    return out


def policy_for(config, sensor: str) -> Policy:
    """The sensor's policy: `[events]`, then `[events.sensors.<sensor>]` on top. `min_agree` is
    capped at the number of detectors the sensor has, so that a sensor given fewer detectors
    than the common setting can still flag."""
    ev = config.events
    base = {k: getattr(ev, k) for k in POLICY_KEYS}
    base.update(check_policy(f"[events.sensors.{sensor}]", ev.sensors.get(sensor, {})))
    base["min_agree"] = max(1, min(base["min_agree"], len(sensor_plan(config, sensor))))
    return Policy(**base)


def check_events_config(config) -> None:
    """Every policy once, so a bad key stops start-up with a message naming it."""
    ev = config.events
    check_policy("[events]", {k: getattr(ev, k) for k in POLICY_KEYS})
    for sensor, table in ev.sensors.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"[events.sensors.{sensor}]: expected a table, got {table!r}")
        policy_for(config, sensor)


def decide(judged: Mapping[str, tuple[str, Sequence]], n: int, min_agree: int):
    """The sensor's decision rule over `n` readings (see the module doc). `judged`: {detector or
    "rule:<name>": (a state letter per reading, a score per reading)}. Returns the detectors' and
    the rules' (name, hit, scores), how many detectors agree on each reading, and which are flagged.

    >>> _, _, agree, flagged = decide({"dbscan": ("an", [0.9, 0.1]), "iforest": ("aa", [0.8, 0.7]),
    ...                                "rule:stuck": ("na", [0.0, 1.0])}, 2, min_agree=2)
    >>> agree.tolist(), flagged.tolist()
    ([2, 1], [True, True])
    """
    det_flags, rule_flags = [], []
    for name, (letters, scores) in judged.items():
        hit = np.frombuffer(letters.encode("ascii"), dtype=np.uint8) == ord("a")
        (rule_flags if name.startswith(RULE_PREFIX) else det_flags).append((name, hit, scores))
    agree = np.sum([h for _, h, _ in det_flags], axis=0) if det_flags else np.zeros(n, dtype=int)
    flagged = agree >= max(1, min_agree)
    for _, hit, _ in rule_flags:
        flagged = flagged | hit
    return det_flags, rule_flags, agree, flagged


@dataclass
class Event:
    """One event as it stands; the payload of an `_vigie.events` message (`payload`/`from_payload`).
    Times are microseconds since the epoch (UTC), as the readings carry them."""

    sensor: str
    session: str
    start_seq: int
    start_ts_us: int
    start_value: float | None  # None: opened by a silence (no reading to show)
    end_seq: int
    end_ts_us: int
    peak_seq: int
    peak_ts_us: int
    peak_value: float | None
    peak_score: float
    members: tuple[str, ...]
    n_flagged: int
    max_agree: int
    severity: str
    closed_ts_us: int | None = None
    baseline: float | None = None  # the last unflagged reading before it opened (None: none seen)
    silent: bool = False  # open on a silent sensor: only a reading can end the silence
    rev: int = 0  # increases with every change sent: the store keeps the highest

    @property
    def id(self) -> str:
        return f"{self.session}:{self.sensor}:{self.start_seq}"

    @property
    def closed(self) -> bool:
        return self.closed_ts_us is not None

    def payload(self) -> dict:
        d = dataclasses.asdict(self)
        d["members"] = list(self.members)
        d["id"] = self.id
        return d

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> "Event":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in p.items() if k in names}
        kw["members"] = tuple(kw.get("members", ()))
        return cls(**kw)


@dataclass
class EventTracker:
    """Follows one sensor's judged readings, in order, and reports each event's changes.

    Pure and picklable: what it returns depends only on what it was fed. `feed_columns` takes a
    batch as the detector worker has it (states as letters, lib.states.STATE_CODES); `feed` one
    reading. Both return the events that changed, at most one snapshot per event per call, in
    the order they changed."""

    sensor: str
    policy: Policy = field(default_factory=Policy)
    current: Event | None = None
    since_flag: int = 0  # unflagged readings since the open event's last flagged one
    quiet_from_ts: int = 0  # when the open event's quiet period started (its last flag)
    last_normal: float | None = None  # the latest unflagged reading's value

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, session: str, seq: int, ts_us: int, value: float, flags: Mapping[str, float | None]) -> list[Event]:
        """One reading; `flags` maps each detector or "rule:<name>" that said "anomaly" to its score."""
        judged = {name: ("a", [score]) for name, score in flags.items()}
        return self.feed_columns([session], [seq], [ts_us], [value], judged)

    def feed_columns(
        self,
        sessions: str | Sequence[str],
        seqs: Sequence[int],
        ts_us: Sequence[int],
        values: Sequence[float],
        judged: Mapping[str, tuple[str, Sequence]],
    ) -> list[Event]:
        """Many readings of the sensor, in order. `judged`: {detector or "rule:<name>": (a state
        letter per reading, a score per reading)}, as lib.detect.detection.Judge returns them."""
        n = len(seqs)
        if n == 0:
            return []
        changed: dict[str, Event] = {}
        det_flags, rule_flags, agree, flagged = decide(judged, n, self.policy.min_agree)
        ts = np.asarray(ts_us, dtype=np.int64)
        vals = np.asarray(values, dtype=float)
        # for each reading, the index of the latest unflagged one up to it (-1: none in this batch)
        normal_at = np.maximum.accumulate(np.where(flagged, -1, np.arange(n)))
        at = 0  # the next reading not yet accounted for
        if self.current is not None and self.current.silent:
            # The first reading after a silence ends it; the quiet period counts from it.
            ev = self.current
            ev.silent = False
            ev.end_seq, ev.end_ts_us = int(seqs[0]), int(ts[0])
            self.quiet_from_ts, self.since_flag = int(ts[0]), 0
            changed[ev.id] = ev
            if not flagged[0]:
                at = 1
        for i in np.flatnonzero(flagged):
            if i < at:
                continue
            if normal_at[i] >= 0:
                self.last_normal = float(vals[normal_at[i]])
            self._maybe_close(ts, at, i, changed)
            self._flag(
                _session(sessions, i),
                int(seqs[i]),
                int(ts[i]),
                float(values[i]),
                [(name, _score(scores[i])) for name, hit, scores in det_flags if hit[i]],
                [(name, _score(scores[i], 1.0)) for name, hit, scores in rule_flags if hit[i]],
                int(agree[i]),
                changed,
            )
            at = i + 1
        self._maybe_close(ts, at, n, changed)
        if normal_at[-1] >= 0:
            self.last_normal = float(vals[normal_at[-1]])
        return self._emit(changed)

    def silence(self, session: str, seq: int, ts_us: int) -> list[Event]:
        """The sensor fell silent after reading (session, seq, ts_us): the no-data rule fired."""
        changed: dict[str, Event] = {}
        ev = self.current
        if ev is None or ev.silent:
            if ev is None:
                ev = self._open(session, seq, ts_us, None)
                ev.n_flagged = 0
                ev.peak_score = 1.0
            else:
                return []
        ev.members = tuple(sorted(set(ev.members) | {NO_DATA}))
        ev.silent = True
        ev.severity = self._severity(ev)
        changed[ev.id] = ev
        return self._emit(changed)

    def tick(self, now_us: int) -> list[Event]:
        """Close the open event when the quiet period has passed by `now_us` without a reading
        (a sensor that stopped sending without a no-data rule). Silent events stay open."""
        ev = self.current
        if ev is None or ev.silent or self.since_flag < self.policy.quiet_n:
            return []
        closes_at = self.quiet_from_ts + int(self.policy.quiet_s * 1e6)
        if now_us < closes_at:
            return []
        return self._emit({ev.id: self._close(closes_at)})

    def resume(self, event: Event, readings_since: int = 0) -> None:
        """Carry on an event still open when this tracker was built (a restarted worker, or a
        sensor handed over by another one); `readings_since`: unflagged readings after its end."""
        if event.closed:
            return
        self.current = event
        self.quiet_from_ts = event.end_ts_us
        self.since_flag = readings_since

    # -- the event's life ------------------------------------------------------------------------
    def _open(self, session: str, seq: int, ts: int, value: float | None) -> Event:
        self.current = Event(
            self.sensor,
            session,
            seq,
            ts,
            value,
            seq,
            ts,
            seq,
            ts,
            value,
            -1.0,
            (),
            0,
            0,
            self.policy.base_severity,
            baseline=self.last_normal,
        )
        return self.current

    def _flag(self, session, seq, ts, value, dets, rules, agree, changed) -> None:
        ev = self.current
        if ev is None:
            ev = self._open(session, seq, ts, value)
        score = max([s for _, s in dets + rules], default=0.0)
        if score > ev.peak_score or (
            score == ev.peak_score
            and ev.baseline is not None
            and ev.peak_value is not None
            and abs(value - ev.baseline) > abs(ev.peak_value - ev.baseline)
        ):
            ev.peak_seq, ev.peak_ts_us, ev.peak_value, ev.peak_score = seq, ts, value, score
        ev.end_seq, ev.end_ts_us = seq, ts
        ev.n_flagged += 1
        ev.max_agree = max(ev.max_agree, agree)
        new = {name for name, _ in dets + rules}
        if not new <= set(ev.members):
            ev.members = tuple(sorted(set(ev.members) | new))
        ev.severity = self._severity(ev)
        self.quiet_from_ts, self.since_flag = ts, 0
        changed[ev.id] = ev

    def _severity(self, ev: Event) -> str:
        """The policy's severity, never below what the event already reached."""
        found = self.policy.severity(ev.max_agree, ev.peak_score, ev.members)
        return max(found, ev.severity, key=SEVERITY_RANK.__getitem__)

    def _maybe_close(self, ts: np.ndarray, lo: int, hi: int, changed: dict) -> None:
        """Readings lo..hi-1 are unflagged: close the open event at the first of them that ends
        its quiet period, else count them."""
        ev = self.current
        if ev is None or hi <= lo:
            return
        if ev.silent:
            return
        p = self.policy
        count = self.since_flag + np.arange(1, hi - lo + 1)
        quiet = (ts[lo:hi] - self.quiet_from_ts >= int(p.quiet_s * 1e6)) & (count >= p.quiet_n)
        if quiet.any():
            k = lo + int(np.argmax(quiet))
            changed[ev.id] = self._close(int(ts[k]))
        else:
            self.since_flag += hi - lo

    def _close(self, at_us: int) -> Event:
        ev = self.current
        ev.closed_ts_us = max(at_us, ev.end_ts_us)
        self.current = None
        self.since_flag = 0
        return ev

    def _emit(self, changed: dict[str, Event]) -> list[Event]:
        out = []
        for ev in changed.values():
            ev.rev += 1
            out.append(dataclasses.replace(ev))  # a snapshot: later changes do not alter it
        return out


def _session(sessions, i: int) -> str:
    return sessions if isinstance(sessions, str) else sessions[i]


def _score(s, default: float = 0.0) -> float:
    return default if s is None else float(s)


class EventBook:
    """A worker's trackers, one per sensor, built from the configuration as sensors appear.

    `restore(sensors)` (optional) returns the events still open in the store for those sensors
    (all of them for None): a restarted worker, or one handed a sensor by another worker, carries
    them on instead of opening a second event for the same run of flags."""

    def __init__(self, config, restore=None):
        self.config = config
        self.trackers: dict[str, EventTracker] = {}
        self._restore = restore
        if restore is not None:
            for ev in restore(None):
                self.tracker(ev.sensor).resume(ev)

    def tracker(self, sensor: str) -> EventTracker:
        found = self.trackers.get(sensor)
        if found is None:
            found = self.trackers[sensor] = EventTracker(sensor, policy_for(self.config, sensor))
        return found

    def reload(self, sensor: str) -> None:
        """Another worker judged `sensor` meanwhile: take its open event from the store."""
        tracker = self.trackers[sensor] = EventTracker(sensor, policy_for(self.config, sensor))
        if self._restore is not None:
            for ev in self._restore([sensor]):
                tracker.resume(ev)

    def tick(self, now_us: int, owned: set[str] | None = None) -> list[Event]:
        out = []
        for sensor, tracker in self.trackers.items():
            if owned is None or sensor in owned:
                out += tracker.tick(now_us)
        return out


def event_messages(events: Sequence[Event]) -> list:
    """One `_vigie.events` message per event snapshot, keyed by sensor (a sensor's events stay in
    order on one partition)."""
    return [json_message(EVENTS, ev.sensor, {"type": "event", **ev.payload()}) for ev in events]


def open_events(conn, sensors=None) -> list:
    """Events the detectors have not closed, read from the store's `events` table on `conn`
    (lib.store.reader.read_db): what a restarted detector worker carries on."""
    from lib.store.named import open_event_rows  # a named read: a running store answers it

    out = []
    for row in open_event_rows(conn, sensors):
        # event_id, then sensor .. peak_score in Event's order, then the rest
        members, n, agree, severity, silent, rev, baseline = row[12:]
        members = tuple(m for m in members.split(",") if m)
        out.append(Event(*row[1:12], members, n, agree, severity, None, baseline, silent, rev))
    return out
