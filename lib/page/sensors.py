"""The operator's sensors (`[sensors.<name>]` in vigie.toml): their names on the page, units,
expected ranges, which are hidden, and their order.

Stored data keeps the name each sensor sends; the page shows the label, leaves hidden sensors out
of every view (pickers, charts, tables, counts and CSVs for "all sensors"), and lists sensors in
the operator's order: by `order`, then as written in vigie.toml, then the unconfigured ones by
name (a sensor nobody described, such as a name torn by a second reader, comes last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from lib.config import Sensor


@dataclass(frozen=True)
class SensorBook:
    settings: Mapping[str, Sensor]

    @property
    def hidden(self) -> tuple[str, ...]:
        return tuple(name for name, s in self.settings.items() if s.hidden)

    def get(self, name: str) -> Sensor:
        return self.settings.get(name) or Sensor()

    def label(self, name: str) -> str:
        """The sensor's name on the page."""
        return self.get(name).label or name

    def title(self, name: str) -> str:
        """Its label and unit, for a chart's heading: "Humidité (%)"."""
        s = self.get(name)
        text = s.label or name
        if s.unit:
            text += f" ({s.unit})"
        return text

    def expected(self, name: str) -> tuple[float | None, float | None]:
        s = self.get(name)
        return s.min, s.max

    def rank(self, name: str) -> tuple:
        """Sort key of the operator's order."""
        listed = list(self.settings)
        s = self.settings.get(name)
        if s is None:
            return (2, 0, 0, name)
        if s.order is None:
            return (1, 0, listed.index(name), name)
        return (0, s.order, listed.index(name), name)

    def shown(self, names: Iterable[str]) -> list[str]:
        """`names` without the hidden ones, in the operator's order.

        >>> from lib.config import Sensor
        >>> book = SensorBook({"temperature": Sensor(order=2), "humidite": Sensor(order=1),
        ...                    "pression": Sensor(), "emperature": Sensor(hidden=True)})
        >>> book.shown(["emperature", "zeta", "alpha", "pression", "temperature", "humidite"])
        ['humidite', 'temperature', 'pression', 'alpha', 'zeta']
        """
        hidden = set(self.hidden)
        return sorted((n for n in names if n not in hidden), key=self.rank)
