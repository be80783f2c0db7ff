"""Read-side queries for the app and the tests. Each takes an open (read-only) connection and
returns a pandas DataFrame; values always go in as parameters."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd


def sensors(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per sensor: readings, last reading time and value."""
    return conn.execute("""
        SELECT sensor, count(*) AS readings, max(ts) AS last_ts, arg_max(value, ts) AS last_value
        FROM readings GROUP BY sensor ORDER BY sensor""").df()


def detectors(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT detector FROM states ORDER BY detector").fetchall()]


def recent_readings(conn: duckdb.DuckDBPyConnection, sensor: str, since: datetime) -> pd.DataFrame:
    """Readings of `sensor` since `since` (UTC), oldest first."""
    return conn.execute("""
        SELECT session_id, seq, ts, value FROM readings
        WHERE sensor = ? AND ts >= ? ORDER BY ts, session_id, seq""", [sensor, since]).df()


def recent_states(conn: duckdb.DuckDBPyConnection, sensor: str, since: datetime,
                  states: tuple[str, ...] = ("anomaly", "initializing")) -> pd.DataFrame:
    """States of `sensor` since `since`, with the reading's value, for chart markers."""
    marks = ",".join("?" * len(states))
    return conn.execute(f"""
        SELECT s.ts, r.value, s.detector, s.state, s.score, s.session_id, s.seq
        FROM states s JOIN readings r USING (session_id, seq)
        WHERE s.sensor = ? AND s.ts >= ? AND s.state IN ({marks})
        ORDER BY s.ts""", [sensor, since, *states]).df()


def totals(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    row = conn.execute("""
        SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM states),
               (SELECT count(*) FROM rejects), (SELECT count(*) FROM sessions)""").fetchone()
    return dict(zip(("readings", "states", "rejects", "sessions"), row))
