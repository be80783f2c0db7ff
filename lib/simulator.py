"""The simulated Arduino: realistic sensor signals with labelled anomalies, written to a
pseudo-terminal that the producer opens like a real port.

A scenario (TOML) names the sensors, their signals, the total line rate and the anomalies. Every
injected anomaly's truth (sensor, kind, start, end) is published, so detections can be checked.
The same seed gives the same lines.
"""
from __future__ import annotations

import fcntl
import logging
import math
import os
import pty
import select
import struct
import termios
import time
import tomllib
import tty
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.protocol import format_line, valid_topic

log = logging.getLogger(__name__)

ANOMALY_KINDS = ("spike", "dip", "level_shift", "drift", "flatline", "noise", "dropout", "malformed")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class SensorSpec:
    name: str
    base: float = 50.0
    amplitude: float = 5.0      # of the slow cycle
    period_s: float = 600.0     # of the slow cycle (a "day", compressed for demos)
    noise: float = 0.2          # standard deviation of the reading noise
    decimals: int = 2


@dataclass(frozen=True)
class AnomalySpec:
    kind: str
    sensor: str               # a sensor name, or "*" for any
    every_s: float = 30.0     # mean time between injections
    duration_s: float = 0.0   # 0: one reading
    magnitude: float = 8.0    # in units of the sensor's noise


@dataclass(frozen=True)
class Scenario:
    sensors: tuple[SensorSpec, ...]
    anomalies: tuple[AnomalySpec, ...] = ()
    rate: float | None = None  # total lines/s; the configuration's rate when None


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
    try:
        obj = cls(**fixed, **values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    for name, default in ((f, cls.__dataclass_fields__[f].default) for f in values):
        if isinstance(default, (int, float)) and not isinstance(getattr(obj, name), (int, float)):
            raise ScenarioError(f"{where}: {name} must be a number")
    return obj


def scenario_from_dict(raw: dict, where: str = "scenario") -> Scenario:
    extra = set(raw) - {"sensors", "anomalies", "rate"}
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    sensors = []
    for name, spec in (raw.get("sensors") or {}).items():
        if valid_topic(name):
            raise ScenarioError(f"{where}: bad sensor name {name!r} ({valid_topic(name)})")
        sensors.append(_build(SensorSpec, f"{where}: [sensors.{name}]", spec, name=name))
    if not sensors:
        raise ScenarioError(f"{where}: no [sensors.<name>] table")
    anomalies = []
    for i, spec in enumerate(raw.get("anomalies") or []):
        a = _build(AnomalySpec, f"{where}: anomalies[{i}]", spec)
        if a.kind not in ANOMALY_KINDS:
            raise ScenarioError(f"{where}: anomalies[{i}]: unknown kind {a.kind!r} (known: {', '.join(ANOMALY_KINDS)})")
        if a.sensor != "*" and a.sensor not in {s.name for s in sensors}:
            raise ScenarioError(f"{where}: anomalies[{i}]: no sensor {a.sensor!r}")
        if a.every_s <= 0:
            raise ScenarioError(f"{where}: anomalies[{i}]: every_s must be positive")
        anomalies.append(a)
    rate = raw.get("rate")
    if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
        raise ScenarioError(f"{where}: rate must be a positive number")
    return Scenario(tuple(sensors), tuple(anomalies), float(rate) if rate is not None else None)


@dataclass
class Injection:
    sensor: str
    kind: str
    start: float      # simulated seconds since the run started
    end: float
    magnitude: float


@dataclass
class SignalModel:
    """Generates the lines of a scenario at simulated times; pure given its seed."""
    scenario: Scenario
    seed: int = 0
    rng: np.random.Generator = field(init=False)
    active: list[Injection] = field(default_factory=list, init=False)
    next_due: list[float] = field(default_factory=list, init=False)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        # Leave the start quiet so the windows fill before the first anomaly.
        self.next_due = [5.0 + a.every_s * self.rng.random() for a in self.scenario.anomalies]
        self._flat: dict[str, float] = {}

    def _schedule(self, t: float) -> list[Injection]:
        started = []
        for i, a in enumerate(self.scenario.anomalies):
            if t >= self.next_due[i]:
                names = [s.name for s in self.scenario.sensors]
                sensor = a.sensor if a.sensor != "*" else names[int(self.rng.integers(len(names)))]
                inj = Injection(sensor, a.kind, t, t + a.duration_s, a.magnitude)
                self.active.append(inj)
                started.append(inj)
                self.next_due[i] = t + a.every_s * (0.5 + self.rng.random())
        return started

    def line(self, spec: SensorSpec, t: float) -> tuple[bytes | None, list[Injection]]:
        """The line `spec`'s board prints at simulated time `t` (None during a dropout), and the
        injections that started with it."""
        started = self._schedule(t)
        value = spec.base + spec.amplitude * math.sin(2 * math.pi * t / spec.period_s) \
            + spec.noise * float(self.rng.standard_normal())
        mine = [a for a in self.active if a.sensor == spec.name]
        for a in mine:
            k = a.magnitude * max(spec.noise, 1e-3)
            if a.kind == "spike":
                value += k
            elif a.kind == "dip":
                value -= k
            elif a.kind == "level_shift":
                value += k
            elif a.kind == "drift":
                value += k * (t - a.start) / max(a.end - a.start, 1e-9)
            elif a.kind == "flatline":
                value = self._flat.setdefault(spec.name, value)
            elif a.kind == "noise":
                value += k * float(self.rng.standard_normal())
            elif a.kind == "dropout":
                value = None
            elif a.kind == "malformed":
                return f"{spec.name}!{value:.2f}x?".encode(), started
        # A one-reading injection ends with the reading it changed.
        self.active = [a for a in self.active if not (a.sensor == spec.name and a.end <= t)]
        if not any(a.kind == "flatline" and a.sensor == spec.name for a in self.active):
            self._flat.pop(spec.name, None)
        if value is None:
            return None, started
        return format_line(spec.name, value, spec.decimals), started


class PseudoBoard:
    """A pseudo-terminal standing in for the board's USB serial port, published at `link`."""

    def __init__(self, link: Path):
        self.link = Path(link)
        self.master: int | None = None
        self.slave: int | None = None

    def plug(self) -> str:
        self.master, self.slave = pty.openpty()
        # Raw mode: the bytes go through as a board sends them (no echo, no CR/LF translation).
        tty.setraw(self.slave, termios.TCSANOW)
        # Packet mode tells us when the reader flushes its input, which pyserial does on open.
        fcntl.ioctl(self.master, termios.TIOCPKT, struct.pack("i", 1))
        name = os.ttyname(self.slave)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, self.link)
        log.info("board plugged at %s -> %s", self.link, name)
        return name

    def wait_for_reader(self, stop, timeout: float | None = None) -> bool:
        """Block until a reader opens the port (pyserial flushes its input on open), as an Arduino
        restarts its sketch when the port opens; lines sent before that would be flushed unread.
        Returns False on stop or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                packet = os.read(self.master, 1024)
                if packet and packet[0] & termios.TIOCPKT_FLUSHREAD:
                    log.info("reader opened the port")
                    return True
        return False

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until the reader has taken what was written: closing the pseudo-terminal discards
        unread bytes, and a stop should not lose lines that a board had already sent."""
        deadline = time.monotonic() + timeout
        while self.slave is not None and time.monotonic() < deadline:
            waiting = struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            if waiting == 0:
                return
            time.sleep(0.02)

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None
        log.info("board unplugged")

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]


def run_board(board: PseudoBoard, model: SignalModel, rate: float, stop, on_injection=None,
              ledger=None, count: int | None = None, clock=time.monotonic) -> int:
    """Write lines at `rate` per second in total (sensors in turn) until `stop` or `count` lines.
    Returns the number of lines written."""
    sensors = model.scenario.sensors
    t0 = clock()
    wall0 = time.time()
    written = 0
    i = 0
    while not stop.is_set() and (count is None or written < count):
        due = t0 + i / rate
        delay = due - clock()
        if delay > 0:
            stop.wait(delay)
            if stop.is_set():
                break
        spec = sensors[i % len(sensors)]
        t_sim = i / rate
        line, started = model.line(spec, t_sim)
        for inj in started:
            if on_injection:
                on_injection(inj, wall0)
        i += 1
        if line is None:
            continue
        board.write(line)
        written += 1
        if ledger is not None:
            ledger.write(line)
    return written
