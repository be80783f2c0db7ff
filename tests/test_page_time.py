"""The operator's clock (lib/page/clock.py): times shown in `[app] timezone`, typed times back to UTC,
across a daylight-saving change; an unknown zone stops start-up naming the key."""

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from lib.config import ConfigError, load_config
from lib.page.clock import Clock, machine_zone

PARIS = Clock.from_setting("Europe/Paris")


def test_stored_utc_is_shown_on_the_operators_clock_and_typed_times_go_back():
    # winter (UTC+1), summer (UTC+2)
    assert PARIS.wall(datetime(2026, 1, 15, 12, 51)) == datetime(2026, 1, 15, 13, 51)
    assert PARIS.wall(datetime(2026, 7, 15, 12, 51)) == datetime(2026, 7, 15, 14, 51)
    assert PARIS.text(datetime(2026, 7, 15, 12, 51, 7, 500)) == "2026-07-15 14:51:07"
    assert PARIS.to_utc(datetime(2026, 7, 15, 14, 51)) == datetime(2026, 7, 15, 12, 51)
    # the night clocks go back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice, the first is meant
    assert PARIS.to_utc(datetime(2026, 10, 25, 2, 30)) == datetime(2026, 10, 25, 0, 30)
    series = pd.Series(pd.to_datetime(["2026-10-25 00:30", "2026-10-25 01:30"]))
    assert list(PARIS.wall(series)) == [pd.Timestamp("2026-10-25 02:30")] * 2
    assert list(PARIS.offset_ms(series)) == [7_200_000, 3_600_000]


def test_a_days_bounds_follow_the_zone():
    lo, hi = PARIS.day_bounds(date(2026, 7, 15), date(2026, 7, 16))
    assert lo == datetime(2026, 7, 14, 22, 0) and hi == datetime(2026, 7, 16, 21, 59, 59, 999999)


def test_the_machines_zone_is_the_default(tmp_path):
    assert machine_zone(tz_env="Asia/Kolkata")[1] == "Asia/Kolkata"
    link = tmp_path / "localtime"
    link.symlink_to(Path("/usr/share/zoneinfo/America/Chicago"))
    zone, name = machine_zone(tz_env="", localtime=link)
    assert name == "America/Chicago" and zone.utcoffset(datetime(2026, 1, 1)).total_seconds() == -6 * 3600
    copied = tmp_path / "copied"
    copied.write_bytes(Path("/usr/share/zoneinfo/Asia/Kolkata").read_bytes())
    zone, name = machine_zone(tz_env="", localtime=copied)
    assert name == "local" and zone.utcoffset(datetime(2026, 1, 1)).total_seconds() == 5.5 * 3600
    assert Clock.from_setting("Etc/UTC").name == "UTC"


def test_an_unknown_time_zone_stops_start_up_naming_the_key():
    assert load_config(env={"VIGIE_APP_TIMEZONE": "Europe/Paris"}).app.timezone == "Europe/Paris"
    assert load_config(env={}).app.timezone == ""
    with pytest.raises(ConfigError, match=r"\[app\] timezone: unknown time zone 'Europe/Pari'"):
        load_config(env={"VIGIE_APP_TIMEZONE": "Europe/Pari"})
