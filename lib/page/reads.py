"""What the page reads: one typed function per query, cached for a few seconds.

Each function takes the DuckDB file first (the cache key; tests serve several files from one
process), then the query's own arguments. All of them go through `ask`, the one place that
reaches the store (by query name, through `lib.store.reader.read_db`), so the transport of a
query can change without touching the views. Results are cached with `st.cache_data`: reruns
and other viewers within the time to live share one read. Each cached answer keeps the time it
was read, and `oldest_read()` gives the oldest one a page run used: the "as of" time a view that
does not refresh by itself shows (lib.page.views.as_of_bar).
"""

from __future__ import annotations

import functools
import time
from datetime import datetime

import pandas as pd
import streamlit as st

from lib.page import queries
from lib.page.queries import Filters
from lib.store.reader import read_db

#: seconds a result stays fresh: the views that do not refresh by themselves show an "as of" time
TTL_S = 10.0
#: one Live refresh (whole seconds), shared by every viewer of that second
LIVE_TTL_S = 1.0


def ask(db: str, name: str, *args):
    """Run the read query `name` (a function of lib.page.queries) on the database `db`."""
    with read_db(db) as conn:
        return getattr(queries, name)(conn, *args)


_OLDEST = "_vigie_oldest_read"


def _cached(ttl: float = TTL_S):
    """`st.cache_data` for a read, noting when the answer it gives was read (`oldest_read`)."""

    def wrap(fn):
        def stamped(*args, **kwargs):
            return fn(*args, **kwargs), time.time()

        # Streamlit keys a cache by the function's name and source: one name per read.
        stamped.__qualname__ = f"{fn.__qualname__}.stamped"
        cached = st.cache_data(ttl=ttl, max_entries=256, show_spinner=False)(stamped)

        @functools.wraps(fn)
        def read(*args, **kwargs):
            value, read_at = cached(*args, **kwargs)
            st.session_state[_OLDEST] = min(st.session_state.get(_OLDEST, read_at), read_at)
            return value

        read.clear = cached.clear
        return read

    return wrap


def start_run() -> None:
    """A new page run: forget the previous run's read times."""
    st.session_state.pop(_OLDEST, None)


def oldest_read() -> float | None:
    """When the oldest answer this run used was read (Unix seconds), None before any read."""
    return st.session_state.get(_OLDEST)


# --- what exists -------------------------------------------------------------------------------


@_cached()
def sessions(db: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
    return ask(db, "sessions", start, end)


@_cached()
def sensor_names(db: str) -> list[str]:
    return ask(db, "sensor_names")


@_cached()
def detectors(db: str) -> list[str]:
    return ask(db, "detectors")


@_cached()
def time_bounds(db: str, f: Filters = Filters()) -> tuple[datetime | None, datetime | None]:
    return ask(db, "time_bounds", f)


@_cached()
def gaps(db: str, start: datetime, end: datetime, sessions: tuple[str, ...] = ()) -> pd.DataFrame:
    return ask(db, "gaps", start, end, sessions)


@_cached()
def session_sensors(db: str, session: str) -> list[str]:
    return ask(db, "session_sensors", session)


# --- Live --------------------------------------------------------------------------------------


@st.cache_data(ttl=LIVE_TTL_S, max_entries=64, show_spinner=False)
def live_snapshot(
    db: str,
    sensors: tuple[str, ...],
    since: datetime,
    now: datetime,
    order: tuple[str, ...] = (),
    hidden: tuple[str, ...] = (),
) -> dict:
    """Everything one refresh of the Live view draws; the connection is held for the queries
    only, the frames are split per sensor after (`queries.live_shape`)."""
    return queries.live_shape(ask(db, "live_fetch", sensors, since, now, queries.LIVE_MAX_CHARTS, order, hidden))


# --- Overview ----------------------------------------------------------------------------------


@_cached()
def anomaly_strips(db: str, start: datetime, bin_s: int, bins: int, exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    return ask(db, "anomaly_strips", start, bin_s, bins, exclude)


# --- health ------------------------------------------------------------------------------------


@st.cache_data(ttl=LIVE_TTL_S, max_entries=16, show_spinner=False)
def system_health(data_dir: str, _config):
    """Programs, boards, transport backlog and the store's last write (lib.page.health), read
    at most once a second whatever the number of viewers; `data_dir` is the cache key."""
    from lib.page import health

    return health.check(_config)


@_cached(LIVE_TTL_S)
def sensor_health(db: str, now: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per sensor its last reading and rate; per detector how far behind its verdicts are."""
    return ask(db, "health", now), ask(db, "detector_lag", now)


# --- Compare -----------------------------------------------------------------------------------


@_cached()
def per_detector(db: str, f: Filters) -> pd.DataFrame:
    return ask(db, "per_detector", f)


@_cached()
def pair_counts(db: str, f: Filters) -> pd.DataFrame:
    return ask(db, "pair_counts", f)


@_cached()
def truth_available(db: str, f: Filters) -> dict[str, int]:
    return ask(db, "truth_available", f)


@_cached()
def scores_vs_truth(db: str, f: Filters) -> pd.DataFrame:
    return ask(db, "scores_vs_truth", f)


@_cached()
def disagreements(db: str, f: Filters) -> pd.DataFrame:
    return ask(db, "disagreements", f)


@_cached()
def session_series(db: str, session: str, sensor: str) -> pd.DataFrame:
    return ask(db, "session_series", session, sensor)


@_cached()
def live_flags(db: str, session: str, sensor: str, detector: str) -> pd.DataFrame:
    return ask(db, "live_flags", session, sensor, detector)


# --- Anomalies and Labels ----------------------------------------------------------------------


@_cached()
def anomalies(db: str, f: Filters, limit: int | None = None) -> pd.DataFrame:
    return ask(db, "anomalies", f, limit)


@_cached()
def count_readings(db: str, f: Filters) -> int:
    return ask(db, "count_readings", f)


@_cached()
def readings(db: str, f: Filters) -> pd.DataFrame:
    return ask(db, "readings", f)


@_cached()
def labels(db: str, f: Filters = Filters()) -> pd.DataFrame:
    return ask(db, "labels", f)


# --- anomaly events ----------------------------------------------------------------------------


@_cached(LIVE_TTL_S)
def events(db: str, f: queries.EventFilters = queries.EventFilters()) -> pd.DataFrame:
    return ask(db, "events", f)


@_cached(LIVE_TTL_S)
def open_event_count(db: str) -> int:
    return ask(db, "open_event_count")


@_cached(LIVE_TTL_S)
def open_event_spans(db: str, sensors: tuple[str, ...], since: datetime, now: datetime) -> pd.DataFrame:
    return ask(db, "open_event_spans", sensors, since, now)


@_cached()
def chart_data(db: str, sensor: str, start: datetime, end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    return ask(db, "chart_data", sensor, start, end)


def event_readings(db: str, event_id: str) -> pd.DataFrame:
    """Not cached: read right before labelling them."""
    return ask(db, "event_readings", event_id)
