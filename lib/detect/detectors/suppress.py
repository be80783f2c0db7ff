"""One alarm per event: after a large surprise, only a larger one is news for a while.

An operator (and NAB's scoring) counts every further alarm of one event outside its window as a
false alarm, so detectors whose scores stay high for a few readings after an anomaly pass their
surprise through this before squashing it into a score.
"""

from __future__ import annotations

from collections import deque


class Suppression:
    """Remembers the surprises (z values) of the last `readings` readings; when one of them was an
    alarm (above `alarm_z`), a new surprise counts only by how much it exceeds that one.

    >>> s = Suppression(readings=3, alarm_z=4.0)
    >>> s.learn(9.0)
    >>> s.apply(9.0), s.apply(12.0)
    (4.0, 7.0)
    >>> for z in (0.0, 0.0, 0.0):
    ...     s.learn(z)
    >>> s.apply(9.0)
    9.0
    """

    def __init__(self, readings: int, alarm_z: float):
        if readings < 0:
            raise ValueError(f"suppress must be at least 0, got {readings}")
        self.readings, self.alarm_z = readings, alarm_z
        self._recent: deque[float] = deque(maxlen=max(readings, 1))

    def apply(self, z: float) -> float:
        if self.readings and self._recent:
            top = max(self._recent)
            if top > self.alarm_z:
                return min(z, z - top + self.alarm_z)
        return z

    def learn(self, z: float) -> None:
        if self.readings:
            self._recent.append(z)
