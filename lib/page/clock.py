"""The operator's clock: the page shows times in one time zone (`[app] timezone`, default this
machine's), on a 24-hour clock, while everything stored stays in UTC (naive timestamps, as DuckDB
keeps them). Times typed or picked on the page are the operator's and go back to UTC here.

Charts get the operator's wall-clock times marked as UTC and draw them on a UTC scale, so the
browser's own time zone never shifts them (Vega knows only "local" and UTC).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

#: what every table, caption and text field shows
TEXT_FORMAT = "%Y-%m-%d %H:%M:%S"


def known_zone(name: str) -> bool:
    """True when `name` is an IANA time zone this machine knows (e.g. "Europe/Paris")."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def machine_zone(tz_env: str | None = None, localtime: Path = Path("/etc/localtime")) -> tuple[ZoneInfo, str]:
    """This machine's time zone and its name: $TZ, else the zone /etc/localtime links to, else
    the rules in /etc/localtime itself ("local"), else UTC."""
    name = (os.environ.get("TZ", "") if tz_env is None else tz_env).lstrip(":")
    if name and known_zone(name):
        return ZoneInfo(name), name
    target = str(localtime.resolve()) if localtime.exists() else ""
    if "zoneinfo/" in target:
        name = target.split("zoneinfo/", 1)[1]
        if known_zone(name):
            return ZoneInfo(name), name
    if localtime.exists():
        with localtime.open("rb") as rules:
            return ZoneInfo.from_file(rules, key="localtime"), "local"
    return ZoneInfo("UTC"), "UTC"


@dataclass(frozen=True)
class Clock:
    zone: ZoneInfo
    name: str  # what the page calls the zone: "Europe/Paris", "UTC"

    @classmethod
    def from_setting(cls, setting: str) -> "Clock":
        """The clock for `[app] timezone` ("" for this machine's zone)."""
        zone, name = (ZoneInfo(setting), setting) if setting else machine_zone()
        return cls(zone, "UTC" if name in ("Etc/UTC", "Etc/Universal", "UTC", "Universal", "Zulu") else name)

    # --- stored (UTC) -> shown ------------------------------------------------------------------

    def wall(self, ts):
        """Stored UTC time(s) as the operator's wall clock (naive): a datetime or a pandas Series."""
        if isinstance(ts, pd.Series):
            return ts.dt.tz_localize("UTC").dt.tz_convert(self.zone).dt.tz_localize(None)
        if ts is None or pd.isna(ts):
            return None
        return pd.Timestamp(ts).tz_localize("UTC").tz_convert(self.zone).tz_localize(None).to_pydatetime()

    def text(self, ts) -> str:
        """A stored UTC time as the operator reads it: 'YYYY-MM-DD HH:MM:SS'."""
        shown = self.wall(ts)
        return "—" if shown is None else shown.strftime(TEXT_FORMAT)

    def local_frame(self, df: pd.DataFrame, columns=("ts",)) -> pd.DataFrame:
        """A copy of `df` with its UTC time `columns` shown on the operator's wall clock."""
        out = df.copy()
        for col in columns:
            if col in out.columns and len(out):
                out[col] = self.wall(pd.to_datetime(out[col]))
        return out

    def for_chart(self, ts: pd.Series) -> pd.Series:
        """Stored UTC times as wall clock marked UTC, for a chart on a UTC scale."""
        return self.wall(ts).dt.tz_localize("UTC")

    def offset_ms(self, ts: pd.Series) -> pd.Series:
        """Per stored UTC time, the zone's offset from UTC in milliseconds (at that time)."""
        aware = ts.dt.tz_localize("UTC")
        return (
            (aware.dt.tz_convert(self.zone).dt.tz_localize(None) - aware.dt.tz_localize(None))
            // pd.Timedelta(milliseconds=1)
        ).astype("int64")

    # --- typed or picked (operator's) -> stored ---------------------------------------------------

    def to_utc(self, wall: datetime) -> datetime:
        """The operator's wall-clock time as stored UTC (naive). In the hour a DST change repeats,
        the first of the two is meant."""
        return wall.replace(tzinfo=self.zone).astimezone(timezone.utc).replace(tzinfo=None)

    def day_bounds(self, first: date, last: date) -> tuple[datetime, datetime]:
        """UTC bounds of the operator's days `first` to `last`, both whole."""
        end = self.to_utc(datetime.combine(last + timedelta(days=1), time.min)) - timedelta(microseconds=1)
        return self.to_utc(datetime.combine(first, time.min)), end

    def now(self) -> datetime:
        """The operator's wall clock now (naive)."""
        return datetime.now(self.zone).replace(tzinfo=None)
