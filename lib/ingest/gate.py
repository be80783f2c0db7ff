"""Which sensor names become sensors.

A line torn on the wire (a second program reading the same port, the producer opening the port
mid-line) can still parse: "emperature!21.5" is a well-formed line of a sensor that does not
exist, and it used to become a sensor for ever, sorted first in every view. A deployment can list
its sensors (`[serial] sensors`: any other name is a reject, `unknown_sensor`). Without a list, a
name not seen before in this session is held back until it has sent `confirm_lines` well-formed
lines, then all of them are stored, in order: a real new sensor loses nothing, and a torn name,
which does not come back, ends as rejects (`unconfirmed_sensor`) after `unconfirmed_after_s`.
`max_sensors` bounds the names a producer keeps (memory): more are rejects (`too_many_sensors`).

>>> gate = SensorGate(confirm_lines=2)
>>> gate.admit("temperature", 1), gate.admit("temperature", 2), gate.admit("temperature", 3)
((None, []), (None, [1, 2]), (None, [3]))
>>> SensorGate(sensors=("humidite",)).admit("hmidite", 1)
('unknown_sensor', [1])
"""

from __future__ import annotations

import time
from typing import Any, Callable

from lib.ingest.protocol import TOO_MANY_SENSORS, UNKNOWN_SENSOR


class SensorGate:
    def __init__(
        self,
        sensors: tuple[str, ...] = (),
        confirm_lines: int = 3,
        unconfirmed_after_s: float = 30.0,
        max_sensors: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.listed = frozenset(sensors)
        self.confirm_lines, self.unconfirmed_after_s = confirm_lines, unconfirmed_after_s
        self.max_sensors, self.clock = max_sensors, clock
        self.known: set[str] = set()
        self._held: dict[str, tuple[float, list]] = {}  # name -> (first seen, its lines so far)

    @property
    def holding(self) -> int:
        """Lines held back, waiting for their name to be confirmed."""
        return sum(len(items) for _, items in self._held.values())

    def admit(self, sensor: str, item: Any) -> tuple[str | None, list]:
        """(None, items to store now, in order: none while held) or (reject reason, [item])."""
        if sensor in self.known:
            return None, [item]
        if self.listed:
            if sensor not in self.listed:
                return UNKNOWN_SENSOR, [item]
            return self._know(sensor, [item])
        if sensor not in self._held and len(self.known) + len(self._held) >= self.max_sensors:
            return TOO_MANY_SENSORS, [item]
        since, items = self._held.setdefault(sensor, (self.clock(), []))
        items.append(item)
        if len(items) < self.confirm_lines:
            return None, []
        del self._held[sensor]
        return self._know(sensor, items)

    def _know(self, sensor: str, items: list) -> tuple[str | None, list]:
        if len(self.known) >= self.max_sensors:
            return TOO_MANY_SENSORS, items
        self.known.add(sensor)
        return None, items

    def expired(self, everything: bool = False) -> list[tuple[str, list]]:
        """Names held longer than `unconfirmed_after_s` (all of them with `everything`, at a
        stop), with their lines; they are forgotten."""
        now = self.clock()
        out = [
            (name, items)
            for name, (since, items) in self._held.items()
            if everything or now - since >= self.unconfirmed_after_s
        ]
        for name, _ in out:
            del self._held[name]
        return out
