"""Reads that programs other than the page ask a running store by name (lib.store.readserver):
a restarted detector's open events, the operator's rejected flags (fed back into judging), and a
recorded session for evaluation. The page's are in
lib.page.queries. Each runs its SQL on a local connection, or is sent by name to the store."""

from __future__ import annotations

import duckdb

from lib.store.readserver import named


@named
def open_event_rows(conn: duckdb.DuckDBPyConnection, sensors=None) -> list[tuple]:
    """The events the detectors have not closed, as rows (lib.detect.events.open_events makes
    them events again); only those of `sensors` when given."""
    sql = (
        "SELECT event_id, sensor, session_id, start_seq, epoch_us(start_ts), start_value, end_seq,"
        " epoch_us(end_ts), peak_seq, epoch_us(peak_ts), peak_value, peak_score, members, n_flagged,"
        " max_agree, severity, silent, rev, baseline FROM events WHERE closed_at IS NULL"
    )
    params: list = []
    if sensors is not None and not sensors:
        return []
    if sensors is not None:
        sql += f" AND sensor IN ({', '.join('?' * len(sensors))})"
        params = list(sensors)
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


@named
def latest_session_id(conn: duckdb.DuckDBPyConnection) -> str | None:
    row = conn.execute("SELECT session_id FROM sessions ORDER BY started_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


@named
def session_readings_us(conn: duckdb.DuckDBPyConnection, session: str) -> list[tuple[str, int, float]]:
    """(sensor, epoch µs, value) of one session's readings, by sensor then line order."""
    return conn.execute(
        "SELECT sensor, epoch_us(ts), value FROM readings WHERE session_id = ? ORDER BY sensor, seq", [session]
    ).fetchall()


@named
def truth_us(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int]]:
    """(sensor, start µs, end µs) of every simulator injection."""
    return conn.execute("SELECT sensor, epoch_us(started_at), epoch_us(ended_at) FROM truth").fetchall()


@named
def rejected_flags(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str, float]]:
    """(sensor, detector, highest score) of the flags the operator rejected, threshold rules
    left out (lib.detect.feedback)."""
    return [
        (sensor, detector, float(score))
        for sensor, detector, score in conn.execute("""
        SELECT s.sensor, s.detector, max(s.score)
        FROM labels l JOIN states s ON s.session_id = l.session_id AND s.seq = l.seq
        WHERE l.verdict = 'rejected' AND s.state = 'anomaly' AND s.score IS NOT NULL
          AND s.detector NOT LIKE 'rule:%' AND (l.detector IS NULL OR l.detector = s.detector)
        GROUP BY ALL""").fetchall()
    ]
