"""The simulated Arduino: realistic sensor signals with labelled anomalies, written to a
pseudo-terminal that the producer opens like a real port.

A scenario (TOML) names the sensors, their signals, the total line rate and the anomalies. Every
injected anomaly's truth (sensor, kind, start, end) is published, so detections can be checked.
The same seed gives the same lines.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import math
import os
import pty
import queue
import select
import struct
import termios
import time
import tomllib
import tty
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from lib.ingest.protocol import format_line, valid_topic

log = logging.getLogger(__name__)

ACK = b"\x06"  # what a reader writes back, with a byte count, for what it has stored

ANOMALY_KINDS = ("spike", "dip", "level_shift", "drift", "flatline", "noise", "dropout", "malformed")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class SensorSpec:
    """One sensor's normal signal. Beyond the slow cycle and the noise, the realism options are
    off by default, so a scenario that does not ask for them plays as it always did:

    - `harmonic`: a second harmonic (a share of `amplitude`) makes the cycle lopsided, like a day
      with a quick morning rise and a long evening fall; `phase_s` shifts where the cycle starts.
    - `drift_sd`, `drift_s`: the level wanders slowly (weather, ageing, fouling), a mean-reverting
      random walk of standard deviation `drift_sd` units and time constant `drift_s` seconds.
    - `setpoints`, `setpoint_every_s`, `setpoint_ramp_s`: the operator moves the process between
      these levels (offsets from `base`) now and then, and the process follows with a time
      constant. A set-point change is normal operation: it is not an anomaly and has no truth row.
    - `adc_bits`, `adc_min`, `adc_max`: the board reads the sensor with an analog-to-digital
      converter (10 bits: an Arduino's analogRead, codes 0..1023) and maps the code to units,
      `adc_min` at code 0 and `adc_max` at full scale, so readings move in steps.
    """

    name: str
    base: float = 50.0
    amplitude: float = 5.0  # of the slow cycle
    period_s: float = 600.0  # of the slow cycle (a "day", compressed for demos)
    noise: float = 0.2  # standard deviation of the reading noise
    decimals: int = 2
    harmonic: float = 0.0  # second harmonic of the cycle, as a share of `amplitude`
    phase_s: float = 0.0  # seconds into its cycle the sensor starts
    drift_sd: float = 0.0  # slow wander of the level, standard deviation in units (0: none)
    drift_s: float = 3600.0  # ... and its time constant in seconds
    setpoints: tuple[float, ...] = ()  # legitimate levels, offsets from `base`; the first at the start
    setpoint_every_s: float = 0.0  # mean seconds between set-point changes (0: never)
    setpoint_ramp_s: float = 0.0  # time constant of the process following a new set-point
    adc_bits: int = 0  # the converter's resolution (0: readings are not quantised)
    adc_min: float = 0.0  # units at code 0
    adc_max: float = 0.0  # units at full scale


@dataclass(frozen=True)
class AnomalySpec:
    kind: str
    sensor: str  # a sensor name, or "*" for any
    every_s: float = 30.0  # mean time between injections
    duration_s: float = 0.0  # 0: one reading
    magnitude: float = 8.0  # in units of the sensor's noise


@dataclass(frozen=True)
class Scenario:
    sensors: tuple[SensorSpec, ...]
    anomalies: tuple[AnomalySpec, ...] = ()
    rate: float | None = None  # total lines/s; the configuration's rate when None
    quiet_s: float = 5.0  # no anomaly before this, so the detectors' windows fill first
    # At least this many seconds between the end of one injection on a sensor and the start of the
    # next one there (0: injections may overlap). A due injection whose sensor is busy waits.
    spacing_s: float = 0.0


def load_scenario(path: str | os.PathLike) -> Scenario:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None
    return scenario_from_dict(raw, str(path))


def _build(cls, where: str, values: dict, **fixed):
    known = {f for f in cls.__dataclass_fields__} - set(fixed)
    bad = set(values) - known
    if bad:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(known))})")
    values = dict(values)
    for name, value in values.items():
        if isinstance(cls.__dataclass_fields__[name].default, tuple):
            # a list of finite numbers (the only list a scenario has)
            if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
            ):
                raise ScenarioError(f"{where}: {name} must be a list of finite numbers, got {value!r}")
            values[name] = tuple(float(v) for v in value)
    try:
        obj = cls(**fixed, **values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    for name, default in ((f, cls.__dataclass_fields__[f].default) for f in values):
        value = getattr(obj, name)
        if isinstance(default, (int, float)):
            # Finite numbers only (TOML has nan and inf), and whole ones where the default is.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ScenarioError(f"{where}: {name} must be a finite number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise ScenarioError(f"{where}: {name} must be a whole number, got {value!r}")
            if (
                (name in _NON_NEGATIVE and value < 0)
                or (name in _POSITIVE and value <= 0)
                or (name in _AT_MOST and value > _AT_MOST[name])
            ):
                raise ScenarioError(f"{where}: {name} out of range, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ScenarioError(f"{where}: {name} must be a string, got {value!r}")
    if isinstance(obj, SensorSpec):
        if obj.adc_bits and not (obj.adc_max > obj.adc_min and math.isfinite(obj.adc_max - obj.adc_min)):
            raise ScenarioError(f"{where}: adc_bits needs adc_max above adc_min, got {obj.adc_min!r}..{obj.adc_max!r}")
        if obj.setpoint_every_s and len(set(obj.setpoints)) < 2:
            raise ScenarioError(f"{where}: setpoint_every_s needs two setpoints or more to move between")
    return obj


# Checked by _build (fuzzing found each of the first ones as a crash while playing).
_POSITIVE = {"period_s", "every_s", "drift_s"}
_NON_NEGATIVE = {
    "noise",
    "duration_s",
    "decimals",
    "harmonic",
    "drift_sd",
    "setpoint_every_s",
    "setpoint_ramp_s",
    "adc_bits",
}
_AT_MOST = {"decimals": 10, "adc_bits": 24}


def scenario_from_dict(raw: dict, where: str = "scenario") -> Scenario:
    extra = set(raw) - {"sensors", "anomalies", "rate", "quiet_s", "spacing_s"}
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    sensors = []
    if not isinstance(raw.get("sensors") or {}, dict) or not isinstance(raw.get("anomalies") or [], list):
        raise ScenarioError(f"{where}: [sensors.<name>] must be tables and [[anomalies]] a list of tables")
    for name, spec in (raw.get("sensors") or {}).items():
        if not isinstance(spec, dict):
            raise ScenarioError(f"{where}: [sensors.{name}] must be a table, got {spec!r}")
        if valid_topic(name):
            raise ScenarioError(f"{where}: bad sensor name {name!r} ({valid_topic(name)})")
        sensors.append(_build(SensorSpec, f"{where}: [sensors.{name}]", spec, name=name))
    if not sensors:
        raise ScenarioError(f"{where}: no [sensors.<name>] table")
    anomalies = []
    for i, spec in enumerate(raw.get("anomalies") or []):
        if not isinstance(spec, dict):
            raise ScenarioError(f"{where}: anomalies[{i}] must be a table, got {spec!r}")
        a = _build(AnomalySpec, f"{where}: anomalies[{i}]", spec)
        if a.kind not in ANOMALY_KINDS:
            raise ScenarioError(f"{where}: anomalies[{i}]: unknown kind {a.kind!r} (known: {', '.join(ANOMALY_KINDS)})")
        if a.sensor != "*" and a.sensor not in {s.name for s in sensors}:
            raise ScenarioError(f"{where}: anomalies[{i}]: no sensor {a.sensor!r}")
        if a.every_s <= 0:
            raise ScenarioError(f"{where}: anomalies[{i}]: every_s must be positive")
        anomalies.append(a)
    rate = raw.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf):
        raise ScenarioError(f"{where}: rate must be a positive number")
    quiet, spacing = raw.get("quiet_s", 5.0), raw.get("spacing_s", 0.0)
    for key, value in (("quiet_s", quiet), ("spacing_s", spacing)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ScenarioError(f"{where}: {key} must be a number >= 0")
    return Scenario(
        tuple(sensors), tuple(anomalies), float(rate) if rate is not None else None, float(quiet), float(spacing)
    )


@dataclass
class Injection:
    sensor: str
    kind: str
    start: float  # simulated seconds since the run started
    end: float
    magnitude: float


@dataclass
class SetpointChange:
    """A legitimate change of a sensor's level (normal operation, not an anomaly)."""

    sensor: str
    at: float  # simulated seconds since the run started
    old: float  # the set-point before, an offset from the sensor's base
    new: float


@dataclass
class _Normal:
    """One sensor's slowly changing normal state: its wander and its set-point."""

    t: float | None = None  # when it was last advanced
    wander: float = 0.0
    setpoint: float = 0.0  # the level asked for ...
    level: float = 0.0  # ... and the one the process has reached
    next_change: float = math.inf


@dataclass
class SignalModel:
    """Generates the lines of a scenario at simulated times; pure given its seed."""

    scenario: Scenario
    seed: int = 0
    rng: np.random.Generator = field(init=False)
    active: list[Injection] = field(default_factory=list, init=False)
    next_due: list[float] = field(default_factory=list, init=False)
    #: the injections that shaped the line `line` made last (empty for a normal one)
    applied: list[Injection] = field(default_factory=list, init=False)
    #: the latest legitimate set-point changes, oldest first (bounded: a live run never stops)
    setpoint_changes: deque = field(default_factory=lambda: deque(maxlen=10_000), init=False)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        # The realism options draw from their own generator, so that turning them on leaves the
        # noise and the anomaly schedule of a scenario as they were.
        self.normal_rng = np.random.default_rng([self.seed, 1])
        # Leave the start quiet so the windows fill before the first anomaly.
        self.next_due = [self.scenario.quiet_s + a.every_s * self.rng.random() for a in self.scenario.anomalies]
        self._flat: dict[str, float] = {}
        self._free_at: dict[str, float] = {}  # with spacing_s: when each sensor may take a new injection
        self._normal: dict[str, _Normal] = {}
        for spec in self.scenario.sensors:
            n = self._normal[spec.name] = _Normal()
            if spec.setpoints:
                n.setpoint = n.level = spec.setpoints[0]
            if spec.setpoint_every_s:
                n.next_change = spec.setpoint_every_s * (0.5 + self.normal_rng.random())

    def _schedule(self, t: float) -> list[Injection]:
        started = []
        names = [s.name for s in self.scenario.sensors]
        spacing = self.scenario.spacing_s
        for i, a in enumerate(self.scenario.anomalies):
            if t >= self.next_due[i]:
                free = [
                    n
                    for n in (names if a.sensor == "*" else [a.sensor])
                    if not spacing or self._free_at.get(n, -math.inf) <= t
                ]
                if not free:
                    continue  # every sensor it may go to is busy: it waits for the next line
                sensor = a.sensor if a.sensor != "*" else free[int(self.rng.integers(len(free)))]
                inj = Injection(sensor, a.kind, t, t + a.duration_s, a.magnitude)
                self.active.append(inj)
                started.append(inj)
                self._free_at[sensor] = inj.end + spacing
                self.next_due[i] = t + a.every_s * (0.5 + self.rng.random())
        return started

    def normal_value(self, spec: SensorSpec, t: float) -> float:
        """The sensor's normal signal at `t` before noise: base, set-point, wander and cycle. Each
        sensor's time only moves forward (the wander and the set-point are advanced to `t`)."""
        n = self._normal[spec.name]
        first = n.t is None
        dt = 0.0 if first else max(t - n.t, 0.0)
        n.t = t
        if spec.drift_sd:
            if first:
                n.wander = spec.drift_sd * float(self.normal_rng.standard_normal())  # its stationary spread
            else:
                keep = math.exp(-dt / spec.drift_s)
                n.wander = n.wander * keep + spec.drift_sd * math.sqrt(1 - keep * keep) * float(
                    self.normal_rng.standard_normal()
                )
        if t >= n.next_change:
            # at most one change a reading, however short setpoint_every_s is
            others = [v for v in spec.setpoints if v != n.setpoint]
            new = others[int(self.normal_rng.integers(len(others)))]
            self.setpoint_changes.append(SetpointChange(spec.name, n.next_change, n.setpoint, new))
            n.setpoint = new
            n.next_change = max(n.next_change, t) + spec.setpoint_every_s * (0.5 + self.normal_rng.random())
        if not spec.setpoint_ramp_s:
            n.level = n.setpoint
        elif dt:
            n.level += (n.setpoint - n.level) * (1 - math.exp(-dt / spec.setpoint_ramp_s))
        x = 2 * math.pi * (t + spec.phase_s) / spec.period_s
        cycle = math.sin(x) + spec.harmonic * math.sin(2 * x) if spec.harmonic else math.sin(x)
        return spec.base + n.level + n.wander + spec.amplitude * cycle

    @staticmethod
    def quantise(spec: SensorSpec, value: float) -> float:
        """What the board's converter makes of `value`: the nearest of its codes (clipped to the
        range, as a saturated input reads), mapped back to units."""
        if not spec.adc_bits or not math.isfinite(value):
            return value
        top = (1 << spec.adc_bits) - 1
        step = (spec.adc_max - spec.adc_min) / top
        code = min(max(round((value - spec.adc_min) / step), 0), top)
        return spec.adc_min + code * step

    def line(self, spec: SensorSpec, t: float) -> tuple[bytes | None, list[Injection]]:
        """The line `spec`'s board prints at simulated time `t` (None during a dropout), and the
        injections that started with it (those that shaped it are in `applied`)."""
        started = self._schedule(t)
        value = self.normal_value(spec, t) + spec.noise * float(self.rng.standard_normal())
        silent = malformed = False
        self.applied = [a for a in self.active if a.sensor == spec.name]
        for a in self.applied:
            k = a.magnitude * max(spec.noise, 1e-3)
            if a.kind in ("spike", "level_shift"):
                value += k
            elif a.kind == "dip":
                value -= k
            elif a.kind == "drift":
                value += k * (t - a.start) / max(a.end - a.start, 1e-9)
            elif a.kind == "flatline":
                value = self._flat.setdefault(spec.name, value)
            elif a.kind == "noise":
                value += k * float(self.rng.standard_normal())
            elif a.kind == "dropout":
                silent = True
            elif a.kind == "malformed":
                malformed = True
        # A one-reading injection ends with the reading it changed.
        self.active = [a for a in self.active if not (a.sensor == spec.name and a.end <= t)]
        if not any(a.kind == "flatline" and a.sensor == spec.name for a in self.active):
            self._flat.pop(spec.name, None)
        value = self.quantise(spec, value)
        if silent:
            return None, started
        if malformed:
            return self._garbage(spec.name, value), started
        return format_line(spec.name, value, spec.decimals), started

    def _garbage(self, name: str, value: float) -> bytes:
        """One of the ways a real board's line goes wrong (noisy cable, new firmware, a debug
        print); each maps to one reject reason."""
        forms = (
            f"{name}!{value:.2f}x?".encode(),  # not_a_number
            f"{name} {value:.2f}".encode(),  # no_separator
            f"{name}!nan".encode(),  # not_finite
            f"{name}!".encode(),  # empty_value
            f"!{value:.2f}".encode(),  # empty_topic
            f"{name} debug!{value:.2f}".encode(),  # bad_topic
            name.encode() + b"!\xff\xfe" + b"42",  # bad_utf8
            b"#" * 600 + f"!{value:.2f}".encode(),  # too_long
        )
        return forms[int(self.rng.integers(len(forms)))] + b"\r\n"


# -- what the board plays: a paced sequence of lines --------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    due_s: float  # when the line is due, in seconds of playing (pauses excluded)
    line: bytes | None  # None: silence (a dropout)
    started: tuple[Injection, ...] = ()


def scenario_ticks(model: SignalModel, rate: float) -> Iterator[Tick]:
    """The scenario's sensors in turn, `rate` lines per second in total."""
    sensors = model.scenario.sensors
    i = 0
    while True:
        t = i / rate
        line, started = model.line(sensors[i % len(sensors)], t)
        yield Tick(t, line, tuple(started))
        i += 1


def _nab_time(text: str) -> float:
    return datetime.fromisoformat(text.strip()).replace(tzinfo=timezone.utc).timestamp()


def nab_windows(csv_path: str | os.PathLike) -> list[tuple[float, float]]:
    """The labelled anomaly windows of a NAB file, from the `windows.json` beside its category
    folder (NAB's layout); empty when there is none."""
    csv_path = Path(csv_path)
    windows = csv_path.parent.parent / "windows.json"
    if not windows.exists():
        return []
    key = f"{csv_path.parent.name}/{csv_path.name}"
    return [(_nab_time(a), _nab_time(b)) for a, b in json.loads(windows.read_text()).get(key, [])]


def replay_ticks(
    path: str | os.PathLike,
    sensor: str,
    speed: float = 1.0,
    rate: float | None = None,
    windows: list[tuple[float, float]] | None = None,
) -> Iterator[Tick]:
    """A NAB-format CSV (`timestamp,value`) as one sensor: at the file's own pace divided by `speed`
    (1: real time), or at `rate` lines/s when given. Each labelled window becomes a truth
    injection of kind `nab_window`. The value text is sent as written in the file."""
    if valid_topic(sensor):
        raise ScenarioError(f"replay: bad sensor name {sensor!r} ({valid_topic(sensor)})")
    if speed <= 0 or (rate is not None and rate <= 0):
        raise ScenarioError("replay: speed and rate must be positive")
    windows = sorted(windows if windows is not None else nab_windows(path))
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"replay {path}: {exc}") from None
    with f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
            raise ScenarioError(f"replay {path}: expected a 'timestamp,value' header, got {header!r}")
        data = []
        for i, row in enumerate(rows):
            if len(row) < 2:
                continue
            try:
                data.append((_nab_time(row[0]), row[1].strip()))
            except ValueError:
                raise ScenarioError(f"replay {path}: line {i + 2}: bad timestamp {row[0]!r}") from None
    if not data:
        return
    t0 = data[0][0]
    dues = [i / rate for i in range(len(data))] if rate else [(ts - t0) / speed for ts, _ in data]
    # A window starts at its first row and ends at its last one, in playing seconds.
    starts: dict[int, list[Injection]] = {}
    for w_start, w_end in windows:
        rows_in = [i for i, (ts, _) in enumerate(data) if w_start <= ts <= w_end]
        if rows_in:
            first, last = rows_in[0], rows_in[-1]
            starts.setdefault(first, []).append(Injection(sensor, "nab_window", dues[first], dues[last], 0.0))
    for i, (_, value) in enumerate(data):
        yield Tick(dues[i], f"{sensor}!{value}\r\n".encode(), tuple(starts.get(i, ())))


# -- the pseudo-terminal ------------------------------------------------------------------------


class PseudoBoard:
    """A pseudo-terminal standing in for the board's USB serial port, published at `link`.

    The board only writes while a reader has the port open, like an Arduino that restarts its
    sketch when the port opens. The board keeps no slave descriptor of its own, so the master sees
    POLLHUP exactly when no reader has the port open (Linux): that is how it notices a producer
    killed with -9 and waits for the restarted one. Bytes the dead reader never took are read
    back out of the terminal and sent again, from the start of the first line it had not taken
    whole, so no line written is lost to a reader's crash (lines a reader took but did not make
    durable are the reader's loss).

    A reader may also acknowledge what it has made durable by writing `ACK <n> LF` (ACK being the
    0x06 byte) back to the port, n counting bytes of complete lines since it opened the port (Vigie's
    producer does on the simulator). The board then resends from the last acknowledged byte, so a
    reader killed between reading lines and storing them loses none of them either.
    """

    TAIL_MAX = 1 << 20  # recent bytes kept to resend from; far more than a terminal buffers
    FLUSH_GRACE_S = 1.0  # a reader that never flushes (not pyserial) is taken as ready after this

    def __init__(self, link: str | os.PathLike):
        self.link = Path(link)
        self.master: int | None = None
        self.name: str | None = None
        self._tail = bytearray()  # bytes handed to the terminal lately (a suffix of the stream)
        self._tail_base = 0  # stream offset of _tail[0]
        self._conn_base = 0  # stream offset where the current reader's bytes start
        self._acked: int | None = None  # stream offset up to which the current reader acknowledged
        self._ack_buf = bytearray()
        self._backlog = bytearray()  # bytes to write before anything new
        self.resent = 0  # bytes sent again after a reader's crash

    # -- cable ------------------------------------------------------------------------------
    def plug(self) -> str:
        master, slave = pty.openpty()
        try:
            # Raw mode: the bytes go through as a board sends them (no echo, no CR/LF translation).
            tty.setraw(slave, termios.TCSANOW)
            # Packet mode tells us when the reader flushes its input, which pyserial does on open.
            fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
            self.name = os.ttyname(slave)
        finally:
            # Not keeping the slave open is what makes a reader's close visible as POLLHUP.
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self._tail_base += len(self._tail)
        self._tail.clear()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(self.name, tmp)
        os.replace(tmp, self.link)
        log.info("board plugged at %s -> %s", self.link, self.name)
        return self.name

    def unplug(self, partial: bytes = b"") -> None:
        """Pull the cable: the device disappears (the link goes too) and the reader's next read
        fails. `partial` is written first, without its end, as a line cut by the unplug."""
        if self.master is None:
            return
        if self.reader_present():
            self.drain()
            if partial:
                try:
                    os.write(self.master, partial)
                except OSError as exc:
                    log.debug("partial line not written: %s", exc)
                self.drain()
            else:
                self.drain()
        else:
            self.recover()
        # The device goes first, so that a reader reopening at once finds nothing to open.
        if self.link.is_symlink() and os.readlink(self.link) == self.name:
            self.link.unlink()
        os.close(self.master)
        self.master = None
        log.info("board unplugged")

    # -- the reader ---------------------------------------------------------------------------
    def _poll(self, timeout_ms: int) -> int:
        p = select.poll()
        p.register(self.master, select.POLLIN | select.POLLHUP)
        events = p.poll(timeout_ms)
        return events[0][1] if events else 0

    def reader_present(self) -> bool:
        return self.master is not None and not self._poll(0) & select.POLLHUP

    def _packets(self, opening: bool = False) -> int:
        """Read what the reader side sent: packet-mode status bytes (returned, OR-ed) and data,
        in which acknowledgements are looked for. A flush seen when no reader was expected
        (`opening` False) is a new reader that came before the board saw the old one go."""
        flags = 0
        while True:
            try:
                packet = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                break
            if not packet:
                break
            if packet[0] == termios.TIOCPKT_DATA:
                self._take_acks(packet[1:])
            else:
                flags |= packet[0]
        if not opening and flags & termios.TIOCPKT_FLUSHREAD:
            log.warning(
                "a new reader opened the port before the board saw the last one go; "
                "what that one left unread was flushed"
            )
            self._connected()
        return flags

    def _take_acks(self, data: bytes) -> None:
        self._ack_buf += data
        *complete, rest = self._ack_buf.split(b"\n")
        self._ack_buf = bytearray(rest[-64:])
        for token in reversed(complete):
            if token[:1] == ACK and token[1:].isdigit():
                self._acked = max(self._acked or 0, self._conn_base + int(token[1:]))
                return

    def wait_for_reader(self, stop, timeout: float | None = None) -> bool:
        """Block until a reader opens the port and flushes its input (pyserial does on open);
        lines sent before that flush would be lost. Returns False on stop or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        present_since = None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            events = self._poll(50)
            if events & select.POLLHUP:
                present_since = None
                stop.wait(0.02)  # POLLHUP does not block: sleep between looks
                continue
            present_since = present_since or time.monotonic()
            if events & select.POLLIN and self._packets(opening=True) & termios.TIOCPKT_FLUSHREAD:
                log.info("reader opened the port")
                return self._connected()
            if time.monotonic() - present_since >= self.FLUSH_GRACE_S:
                log.info("reader on the port (no flush seen)")
                return self._connected()
        return False

    def _connected(self) -> bool:
        self._conn_base = self._tail_base + len(self._tail)
        self._acked = None
        self._ack_buf.clear()
        return True

    def idle(self, seconds: float) -> bool:
        """Wait up to `seconds` between lines, returning early (False) if the reader goes away."""
        events = self._poll(max(0, math.ceil(seconds * 1000)))
        if events & select.POLLHUP:
            return False
        if events & select.POLLIN:
            self._packets()
        return True

    def _slave_fd(self) -> int:
        return os.open(self.name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def unread(self) -> int:
        """Bytes written that no reader has taken yet (those in the line discipline's buffer)."""
        fd = self._slave_fd()
        try:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        finally:
            os.close(fd)

    def drain(self, timeout: float = 2.0) -> bool:
        """Wait until the reader has taken what was written: closing the pseudo-terminal discards
        unread bytes, and a stop or an unplug should not lose lines the board had already sent.
        A write reaches the reader's buffer a moment later (the kernel pushes it from a queue), so
        an empty buffer counts only when seen twice, a moment apart."""
        deadline = time.monotonic() + timeout
        empty = 0
        while self.master is not None and time.monotonic() < deadline:
            time.sleep(0.01)
            empty = empty + 1 if self.unread() == 0 else 0
            if empty >= 3:
                return True
        return False

    def recover(self) -> int:
        """After the reader went away: take back what it never read and queue it to be sent again,
        from the start of the first line it had not taken whole. Returns the bytes requeued."""
        left = bytearray()
        fd = self._slave_fd()
        try:
            # The terminal refills its buffer from the kernel's queue as we read, a moment later:
            # done only when two looks a moment apart find nothing.
            quiet = 0
            while quiet < 2:
                time.sleep(0.01)
                acked = self._acked
                self._packets()  # the last acknowledgements the reader wrote before it went
                got = int(self._acked != acked)
                while True:
                    try:
                        chunk = os.read(fd, 65536)
                    except (BlockingIOError, OSError):
                        break
                    if not chunk:
                        break
                    left += chunk
                    got += len(chunk)
                quiet = quiet + 1 if not got else 0
        finally:
            os.close(fd)
        cut = len(self._tail) - len(left)
        if cut < 0 or self._tail[cut:] != left:
            log.warning(
                "%d unread bytes do not match what was sent; resending from the last acknowledgement", len(left)
            )
            cut = len(self._tail)
        start = self._tail.rfind(b"\n", 0, cut) + 1 if left else cut
        if self._acked is not None:
            start = max(0, min(start, self._acked - self._tail_base))
        again = bytes(self._tail[start:])
        del self._tail[start:]
        self._acked = None
        if not again:
            return 0
        self._backlog[:0] = again
        self.resent += len(again)
        log.info("requeued %d bytes the reader did not store (%d of them unread)", len(again), len(left))
        return len(again)

    # -- writing ------------------------------------------------------------------------------
    def send(self, data: bytes, stop) -> bool:
        """Write the backlog then `data`. False when the reader went away first (what was not
        written stays queued) or on stop."""
        self._backlog += data
        while True:
            events = self._poll(0)
            if stop.is_set() or events & select.POLLHUP:
                return False
            if events & select.POLLIN:
                self._packets()
            if not self._backlog:
                return True
            try:
                n = os.write(self.master, self._backlog)
            except BlockingIOError:
                # The reader is behind and the terminal is full: wait for room, as a board blocks.
                p = select.poll()
                p.register(self.master, select.POLLOUT)
                p.poll(50)
                continue
            self._tail += self._backlog[:n]
            del self._backlog[:n]
            if len(self._tail) > self.TAIL_MAX:
                drop = len(self._tail) - self.TAIL_MAX // 2
                del self._tail[:drop]
                self._tail_base += drop

    def close(self) -> None:
        """Stop: let the reader take what was sent, then unplug."""
        if self.master is not None:
            self.unplug()


@dataclass(frozen=True)
class Unplug:
    seconds: float
    partial: bool = False  # cut a line in the middle as the cable goes


def run_board(
    board: PseudoBoard,
    ticks: Iterator[Tick],
    stop,
    on_injection=None,
    ledger=None,
    count: int | None = None,
    unplugs: dict[int, Unplug] | None = None,
    requests: "queue.SimpleQueue[Unplug] | None" = None,
    linger: bool = False,
    clock=time.monotonic,
) -> int:
    """Play `ticks` on `board`, paced, until `stop`, the end of `ticks` or `count` lines; lines due
    together go out in one write. Pauses while no reader has the port open, without catching up
    afterwards. `unplugs` maps a number of lines written to an unplug after them; `requests`
    brings unplugs asked for while running (a signal). With `linger`, keeps the port open after the
    last line until `stop` (closing it would look like an unplug), still resending what a crashed
    reader left and serving unplug requests. Returns the number of lines written."""
    unplugs = dict(unplugs or {})
    base = clock()
    written = 0
    batch = bytearray()
    pending: list[bytes] = []

    def flush_batch() -> bool:
        nonlocal base, batch, pending
        while not board.send(bytes(batch), stop):
            batch = bytearray()
            if stop.is_set():
                return False
            paused = clock()
            board.recover()
            log.info("no reader on the port: pausing")
            if not board.wait_for_reader(stop):
                return False
            base += clock() - paused
            log.info("reader back after %.1fs: resuming", clock() - paused)
        batch = bytearray()
        if ledger is not None and pending:
            ledger.write(b"".join(pending))
        pending = []
        return True

    def do_unplug(u: Unplug) -> bool:
        nonlocal base
        if not flush_batch():
            return False
        paused = clock()
        board.unplug(partial=b"half_a_li" if u.partial else b"")
        if stop.wait(u.seconds):
            return False
        board.plug()
        if not board.wait_for_reader(stop):
            return False
        base += clock() - paused
        return True

    for tick in ticks:
        if count is not None and written >= count:
            break
        while True:
            if stop.is_set():
                flush_batch()
                return written
            if requests is not None and not requests.empty():
                if not do_unplug(requests.get()):
                    return written
            delay = base + tick.due_s - clock()
            if delay <= 0:
                break
            if batch and not flush_batch():
                return written
            if not board.idle(min(delay, 0.05)):
                if not flush_batch():  # notices the reader is gone, pauses, resumes
                    return written
        for inj in tick.started:
            if on_injection:
                on_injection(inj, time.time() - (tick.due_s - inj.start))
        if tick.line is None:
            continue
        batch += tick.line
        pending.append(tick.line)
        written += 1
        if len(batch) >= 4096 and not flush_batch():
            return written
        if written in unplugs and not do_unplug(unplugs.pop(written)):
            return written
    if not flush_batch():
        return written
    while linger and not stop.is_set():
        if requests is not None and not requests.empty() and not do_unplug(requests.get()):
            break
        if not board.idle(0.05) and not flush_batch():
            break
    return written
