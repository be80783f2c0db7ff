"""Read-side queries for the app, the tests and the bench. Each takes an open (read-only)
connection and returns a pandas DataFrame (or plain values); values always go in as parameters.

Charts stay fast on large tables because the database does the thinning: `chart_data` returns at
most two readings (the lowest and the highest) per horizontal pixel bucket for the line, and the
flagged readings in full, so no alarm is ever thinned away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import duckdb
import pandas as pd

from lib.states import STATE_ANOMALY as ANOMALY
from lib.states import STATE_INITIALIZING as INITIALIZING

# `named`: the store answers other processes' reads by name (lib.store.readserver), and these
# functions are what its socket runs.
from lib.store.readserver import NAMED, named, wire_type  # noqa: F401  (NAMED: the registry)


def utc_now() -> datetime:
    """Now, as the naive UTC timestamps DuckDB stores."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@wire_type
@dataclass(frozen=True)
class Filters:
    """What the operator chose: empty tuples mean "all"; None bounds mean "open". `exclude`: the
    sensors the operator hid (`[sensors.<name>] hidden`), left out even of "all"."""

    sessions: tuple[str, ...] = ()
    sensors: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    exclude: tuple[str, ...] = ()

    def where(self, alias: str, detectors: bool = False) -> tuple[str, list]:
        """A SQL condition on table `alias` (which has session_id, sensor, ts) and its parameters."""
        parts, params = ["TRUE"], []
        for column, values in (("session_id", self.sessions), ("sensor", self.sensors)) + (
            (("detector", self.detectors),) if detectors else ()
        ):
            if values:
                parts.append(f"{alias}.{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if self.exclude:
            parts.append(f"{alias}.sensor NOT IN ({','.join('?' * len(self.exclude))})")
            params.extend(self.exclude)
        if self.start is not None:
            parts.append(f"{alias}.ts >= ?")
            params.append(self.start)
        if self.end is not None:
            parts.append(f"{alias}.ts <= ?")
            params.append(self.end)
        return " AND ".join(parts), params


@named
def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])


# --- what exists -------------------------------------------------------------------------------


@named
def sensors(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per sensor: readings, last reading time and value."""
    return conn.execute("""
        SELECT sensor, count(*) AS readings, max(ts) AS last_ts, arg_max(value, ts) AS last_value
        FROM readings GROUP BY sensor ORDER BY sensor""").df()


@named
def sensor_names(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT sensor FROM readings ORDER BY sensor").fetchall()]


@named
def detectors(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT detector FROM states ORDER BY detector").fetchall()]


@named
def time_bounds(conn: duckdb.DuckDBPyConnection, f: Filters = Filters()) -> tuple[datetime | None, datetime | None]:
    where, params = Filters(sessions=f.sessions, sensors=f.sensors, exclude=f.exclude).where("r")
    return conn.execute(f"SELECT min(ts), max(ts) FROM readings r WHERE {where}", params).fetchone()


@named
def totals(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    row = conn.execute("""
        SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM states),
               (SELECT count(*) FROM rejects), (SELECT count(*) FROM sessions)""").fetchone()
    return dict(zip(("readings", "states", "rejects", "sessions"), row))


# --- live charts -------------------------------------------------------------------------------


@named
def recent_readings(conn: duckdb.DuckDBPyConnection, sensor: str, since: datetime) -> pd.DataFrame:
    """Readings of `sensor` since `since` (UTC), oldest first (every one of them)."""
    return conn.execute(
        """
        SELECT session_id, seq, ts, value FROM readings
        WHERE sensor = ? AND ts >= ? ORDER BY ts, session_id, seq""",
        [sensor, since],
    ).df()


@named
def recent_states(
    conn: duckdb.DuckDBPyConnection, sensor: str, since: datetime, states: tuple[str, ...] = (ANOMALY, INITIALIZING)
) -> pd.DataFrame:
    """States of `sensor` since `since`, with the reading's value, for chart markers."""
    marks = ",".join("?" * len(states))
    return conn.execute(
        f"""
        SELECT s.ts, r.value, s.detector, s.state, s.score, s.session_id, s.seq
        FROM states s JOIN readings r USING (session_id, seq)
        WHERE s.sensor = ? AND s.ts >= ? AND s.state IN ({marks})
        ORDER BY s.ts""",
        [sensor, since, *states],
    ).df()


@named
def chart_data(
    conn: duckdb.DuckDBPyConnection,
    sensor: str,
    start: datetime,
    end: datetime,
    buckets: int = 600,
    sessions: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What one sensor's chart draws over [start, end] (see `charts_data`)."""
    return charts_data(conn, (sensor,), start, end, buckets, sessions).get(sensor, (_EMPTY_LINE, _EMPTY_MARKS))


_EMPTY_LINE = pd.DataFrame(
    {"ts": pd.Series(dtype="datetime64[us]"), "value": pd.Series(dtype=float), "session_id": pd.Series(dtype=object)}
)
_EMPTY_MARKS = pd.DataFrame(
    {
        c: pd.Series(dtype=t)
        for c, t in (
            ("ts", "datetime64[us]"),
            ("value", float),
            ("detector", object),
            ("score", float),
            ("session_id", object),
            ("seq", "Int64"),
            ("flagged_by", object),
        )
    }
)


@named
def charts_data(
    conn: duckdb.DuckDBPyConnection,
    sensors: Sequence[str],
    start: datetime,
    end: datetime,
    buckets: int = 600,
    sessions: Sequence[str] = (),
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """{sensor: (line, marks)} for the charts of `sensors` (see `charts_fetch`)."""
    return charts_shape(*charts_fetch(conn, sensors, start, end, buckets, sessions))


#: a chart whose buckets are at least this long reads the store's per-minute rollups
ROLLUP_BUCKET_S = 60.0


@named
def charts_fetch(
    conn: duckdb.DuckDBPyConnection,
    sensors: Sequence[str],
    start: datetime,
    end: datetime,
    buckets: int = 600,
    sessions: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the charts of `sensors` (every sensor with readings in the span if empty) draw over
    [start, end], as two frames with a sensor column (`charts_shape` splits them per sensor, after
    the connection is closed: the file is held for the queries only):

    - the line (ts, value, session_id): the readings thinned on the database side to the lowest and
      the highest reading of each session in each of `buckets` equal time buckets (about one per
      pixel), which keeps every peak and dip a plot of all readings would show, plus every flagged
      reading;
    - the marks (ts, value, detector, score, session_id, seq, flagged_by): every reading an
      algorithm flagged, never thinned, one row per algorithm; oldest first.

    One query serves all the sensors, reading each table once through the time range only (zone
    maps skip the rest): sensors' readings share row groups, so a query per sensor would read the
    span's rows once per sensor (measured: the Live view of 100 sensors held the file for 2 s).
    The flagged states first (few), then one pass over the readings that both builds the buckets
    and picks up the flagged readings' values, matched on (sensor, ts, seq) (a state carries its
    reading's ts; ts and seq of one sensor do not repeat across sessions in practice).

    Over a long span (buckets of a minute or more) the readings and states of the span are too
    many to read for a refresh (a 30-day chart over 100 million readings): `charts_fetch_rolled`
    then answers from the store's per-minute rollups and flagged readings instead."""
    if (end - start).total_seconds() / buckets >= ROLLUP_BUCKET_S:
        return charts_fetch_rolled(conn, sensors, start, end, buckets, sessions)
    return charts_fetch_readings(conn, sensors, start, end, buckets, sessions)


@named
def charts_fetch_readings(
    conn: duckdb.DuckDBPyConnection,
    sensors: Sequence[str],
    start: datetime,
    end: datetime,
    buckets: int = 600,
    sessions: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`charts_fetch` from the readings and states themselves, whatever the span (what a long span
    cost before the rollups: bench/bench_queries.py compares)."""
    span_us = max(int((end - start).total_seconds() * 1e6), 1)
    f_sensors = Filters(sessions=tuple(sessions), sensors=tuple(sensors))
    sw, sp = f_sensors.where("s")
    rw, rp = f_sensors.where("r")
    df = conn.execute(
        f"""
        WITH f AS MATERIALIZED (
            SELECT s.sensor, s.session_id, s.seq, s.ts, s.detector, s.score FROM states s
            WHERE s.ts >= ? AND s.ts <= ? AND s.state = 'anomaly' AND {sw}),
        m AS (SELECT DISTINCT sensor, ts, seq FROM f),
        agg AS (
            SELECT r.sensor, r.session_id, arg_min(r.ts, r.value) AS lo_ts, min(r.value) AS lo,
                   arg_max(r.ts, r.value) AS hi_ts, max(r.value) AS hi,
                   list({{'ts': r.ts, 'seq': r.seq, 'value': r.value}}) FILTER (WHERE m.ts IS NOT NULL) AS flagged
            FROM readings r LEFT JOIN m ON r.sensor = m.sensor AND r.ts = m.ts AND r.seq = m.seq
            WHERE r.ts >= ? AND r.ts <= ? AND {rw}
            GROUP BY r.sensor, r.session_id, least((epoch_us(r.ts) - epoch_us(?::TIMESTAMP)) * ? // ?, ? - 1)),
        fl AS (SELECT sensor, unnest(flagged, recursive := true) FROM agg)
        SELECT sensor, 'line' AS kind, lo_ts AS ts, lo AS value, NULL AS detector, NULL::DOUBLE AS score,
               session_id, NULL::BIGINT AS seq, NULL AS flagged_by FROM agg
        UNION ALL SELECT sensor, 'line', hi_ts, hi, NULL, NULL, session_id, NULL, NULL FROM agg
        UNION ALL SELECT f.sensor, 'mark', f.ts, fl.value, f.detector, f.score, f.session_id, f.seq,
                         string_agg(f.detector, ', ' ORDER BY f.detector)
                             OVER (PARTITION BY f.sensor, f.session_id, f.seq)
                  FROM f JOIN fl ON f.sensor = fl.sensor AND f.ts = fl.ts AND f.seq = fl.seq""",
        [start, end, *sp, start, end, *rp, start, buckets, span_us, buckets],
    ).df()
    is_mark = (df["kind"] == "mark").to_numpy()
    lines = df.loc[~is_mark, ["sensor", "kind", "ts", "value", "session_id"]]
    marks = df.loc[is_mark]
    return lines, marks


@named
def charts_fetch_rolled(
    conn: duckdb.DuckDBPyConnection,
    sensors: Sequence[str],
    start: datetime,
    end: datetime,
    buckets: int = 600,
    sessions: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`charts_fetch` from the store's tables kept for long spans (lib.store.rollups), in the
    same two frames:

    - the line: per session and bucket, the lowest and the highest reading of its minutes;
    - the marks: the flagged readings, each at its own reading (time and value), but at most one
      per algorithm and bucket, the one it scored highest: a bucket is a pixel or two wide, and a
      30-day span may hold tens of thousands of flags. `flagged_by` still names every algorithm
      that flagged that reading.

    Both tables are read through the span only: 30 days of 20 sensors are 864,000 rollup rows
    whatever the readings' rate."""
    span_us = max(int((end - start).total_seconds() * 1e6), 1)
    f_sensors = Filters(sessions=tuple(sessions), sensors=tuple(sensors))
    rw, rp = f_sensors.where("r")
    fw, fp = f_sensors.where("f")
    bucket = "least((epoch_us({t}) - epoch_us(?::TIMESTAMP)) * ? // ?, ? - 1)"
    # Two queries rather than one: together, DuckDB materialised the line's aggregate for its two
    # uses and the whole took twice the time of its parts (35 ms against 13 + 5 at 10 million).
    lines = conn.execute(
        f"""
        WITH agg AS (
            SELECT r.sensor, r.session_id, arg_min(r.lo_ts, r.lo) AS lo_ts, min(r.lo) AS lo,
                   arg_max(r.hi_ts, r.hi) AS hi_ts, max(r.hi) AS hi
            FROM readings_1m r
            WHERE r.minute >= time_bucket(INTERVAL 1 MINUTE, ?::TIMESTAMP) AND r.minute <= ? AND {rw}
            GROUP BY r.sensor, r.session_id, {bucket.format(t="r.minute")})
        SELECT sensor, 'line' AS kind, lo_ts AS ts, lo AS value, session_id FROM agg WHERE lo_ts >= ? AND lo_ts <= ?
        UNION ALL SELECT sensor, 'line', hi_ts, hi, session_id FROM agg WHERE hi_ts >= ? AND hi_ts <= ?""",
        [start, end, *rp, start, buckets, span_us, buckets, start, end, start, end],
    ).df()
    marks = conn.execute(
        f"""
        WITH fl AS (
            SELECT f.sensor, f.session_id, f.seq, f.ts, f.detector, f.score, f.value, {bucket.format(t="f.ts")} AS b
            FROM flags f WHERE f.ts >= ? AND f.ts <= ? AND f.value IS NOT NULL AND {fw}),
        best AS (
            SELECT sensor, detector, max_by({{'ts': ts, 'value': value, 'score': score, 'session_id': session_id,
                                               'seq': seq}}, (coalesce(score, -1), -epoch_us(ts))) AS m
            FROM fl GROUP BY sensor, detector, b),
        top AS (SELECT sensor, detector, unnest(m) FROM best),
        who AS (SELECT session_id, seq, string_agg(detector, ', ' ORDER BY detector) AS flagged_by
                FROM fl SEMI JOIN top USING (session_id, seq) GROUP BY ALL)
        SELECT top.sensor, 'mark' AS kind, top.ts, top.value, top.detector, top.score, top.session_id, top.seq,
               who.flagged_by FROM top JOIN who USING (session_id, seq)""",
        [start, buckets, span_us, buckets, start, end, *fp],
    ).df()
    return lines, marks


@named
def anomaly_strips(
    conn: duckdb.DuckDBPyConnection, start: datetime, bin_s: int, bins: int, exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """The Overview's cells: per sensor and time bin (`bins` of `bin_s` seconds, a whole number
    of minutes, from `start`), the readings stored and the readings flagged by any algorithm, and
    which algorithms. From the store's per-minute rollups and flags (lib.store.rollups), so that
    30 days cost what an hour does. Bins without a reading or a flag have no row."""
    end = start + timedelta(seconds=bin_s * bins)
    where, params = Filters(exclude=tuple(exclude)).where("t")
    width = bin_s * 1_000_000
    return conn.execute(
        f"""
        WITH r AS (SELECT t.sensor, (epoch_us(t.minute) - epoch_us(?::TIMESTAMP)) // ? AS bin, sum(t.n) AS readings
                   FROM readings_1m t WHERE t.minute >= ? AND t.minute < ? AND {where} GROUP BY ALL),
        f AS (SELECT t.sensor, (epoch_us(t.ts) - epoch_us(?::TIMESTAMP)) // ? AS bin,
                     count(DISTINCT (t.session_id, t.seq)) AS flagged,
                     string_agg(DISTINCT t.detector, ', ' ORDER BY t.detector) AS detectors
              FROM flags t WHERE t.ts >= ? AND t.ts < ? AND {where} GROUP BY ALL)
        SELECT sensor, bin, coalesce(r.readings, 0)::BIGINT AS readings, coalesce(f.flagged, 0)::BIGINT AS flagged,
               coalesce(f.detectors, '') AS detectors
        FROM r FULL JOIN f USING (sensor, bin) ORDER BY sensor, bin""",
        [start, width, start, end, *params, start, width, start, end, *params],
    ).df()


def charts_shape(lines: pd.DataFrame, marks: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """{sensor: (line, marks)} from `charts_fetch`'s frames: each flagged reading joins its line,
    both sorted by time; one pass over all sensors, then a split."""
    cols = ["sensor", "ts", "value", "session_id"]
    line = pd.concat([lines[cols], marks[cols]], ignore_index=True)
    line = line.drop_duplicates().sort_values(["sensor", "ts"], ignore_index=True)
    marks = marks.drop(columns="kind").sort_values(["sensor", "ts", "detector"], ignore_index=True)
    marks_of = {k: v.drop(columns="sensor").reset_index(drop=True) for k, v in marks.groupby("sensor", sort=False)}
    out = {}
    for sensor, part in line.groupby("sensor", sort=True):
        out[sensor] = (part[["ts", "value", "session_id"]].reset_index(drop=True), marks_of.get(sensor, _EMPTY_MARKS))
    return out


@named
def initializing_spans_many(
    conn: duckdb.DuckDBPyConnection, sensors: Sequence[str], start: datetime, end: datetime
) -> pd.DataFrame:
    """Per sensor (all if `sensors` is empty), session and detector, the stretch in [start, end]
    where the detector was still filling its window, in one pass: columns sensor, session_id,
    detector, start, end, readings."""
    where, params = Filters(sensors=tuple(sensors)).where("states")
    return conn.execute(
        f"""
        SELECT sensor, session_id, detector, min(ts) AS start, max(ts) AS "end", count(*) AS readings
        FROM states WHERE ts >= ? AND ts <= ? AND state = 'initializing' AND {where}
        GROUP BY sensor, session_id, detector ORDER BY start""",
        [start, end, *params],
    ).df()


# --- health ------------------------------------------------------------------------------------


@named
def health(
    conn: duckdb.DuckDBPyConnection, now: datetime, rate_window_s: float = 60.0, horizon: timedelta = timedelta(days=1)
) -> pd.DataFrame:
    """Per sensor heard from within `horizon` of `now`: last reading time, its age in seconds,
    and readings/s over the last `rate_window_s`. Only the horizon is read (zone maps skip the
    rest), so a refresh costs the same on a year of history."""
    return conn.execute(
        """
        SELECT sensor, max(ts) AS last_ts, date_diff('millisecond', max(ts), ?::TIMESTAMP) / 1000.0 AS age_s,
               count(*) FILTER (WHERE ts >= ?) / ? AS per_s
        FROM readings WHERE ts >= ? GROUP BY sensor ORDER BY sensor""",
        [now, now - timedelta(seconds=rate_window_s), rate_window_s, now - horizon],
    ).df()


@named
def detector_lag(
    conn: duckdb.DuckDBPyConnection, now: datetime | None = None, horizon: timedelta = timedelta(days=1)
) -> pd.DataFrame:
    """Per detector heard from within `horizon`: its latest verdict time and how far it is behind
    the newest reading (the workers' status as the data shows it)."""
    since = (now or utc_now()) - horizon
    return conn.execute(
        """
        SELECT detector, max(ts) AS last_verdict,
               date_diff('millisecond', max(ts), (SELECT max(ts) FROM readings WHERE ts >= ?)) / 1000.0 AS behind_s
        FROM states WHERE ts >= ? GROUP BY detector ORDER BY detector""",
        [since, since],
    ).df()


@named
def init_progress_many(conn: duckdb.DuckDBPyConnection, sensors: Sequence[str], since: datetime) -> pd.DataFrame:
    """For the newest session since `since` of each sensor (all if `sensors` is empty): per
    detector, how many readings it has judged and whether it is still initializing (the
    "Initialisation i/N" the original program printed: docs/origins.md). The
    small tables (watermarks: the newest judged reading per detector; sessions) find them, so
    only the span's initializing states are read (reading every state of the span cost a Live
    refresh 40 ms of holding the file at 20,000 readings/s)."""
    ww, wp = Filters(sensors=tuple(sensors)).where("w")
    return conn.execute(
        f"""
        WITH cur AS (SELECT w.sensor, arg_max(w.session_id, coalesce(s.started_at, '-infinity'::TIMESTAMP)) AS
        session_id
                     FROM watermarks w LEFT JOIN sessions s USING (session_id)
                     WHERE w.kind = 'reading' AND {ww} GROUP BY w.sensor),
        init AS (SELECT st.sensor, st.session_id, st.detector, count(*) AS seen, max(st.seq) AS last_seq
                 FROM states st JOIN cur ON st.sensor = cur.sensor AND st.session_id = cur.session_id
                 WHERE st.ts >= ? AND st.state = 'initializing' GROUP BY ALL)
        SELECT init.sensor, init.detector, init.seen, coalesce(w.seq = init.last_seq, TRUE) AS initializing
        FROM init LEFT JOIN watermarks w
          ON w.session_id = init.session_id AND w.sensor = init.sensor AND w.kind = init.detector
        ORDER BY init.sensor, init.detector""",
        [*wp, since],
    ).df()


@named
def gaps(conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime, sessions: Sequence[str] = ()) -> pd.DataFrame:
    """The recorded gaps (port lost, board unplugged) that started in [start, end]: session_id,
    started_at, ended_at (NULL while it lasts), reason."""
    where, params = Filters(sessions=tuple(sessions)).where("g")
    return conn.execute(
        f"""
        SELECT g.session_id, g.started_at, g.ended_at, g.reason FROM gaps g
        WHERE g.started_at >= ? AND g.started_at <= ? AND {where} ORDER BY g.started_at""",
        [start, end, *params],
    ).df()


# --- sessions ----------------------------------------------------------------------------------


@named
def sessions(
    conn: duckdb.DuckDBPyConnection, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Sessions that overlap [start, end] (both optional), newest first, with port, duration,
    readings, rejects, gaps and anomalies per detector (columns `anomalies <detector>`)."""
    df = conn.execute(
        """
        WITH r AS (SELECT session_id, count(*) AS readings, min(ts) AS first_ts, max(ts) AS last_ts
                   FROM readings GROUP BY session_id),
        j AS (SELECT session_id, count(*) AS rejects FROM rejects GROUP BY session_id),
        g AS (SELECT session_id, count(*) AS gaps FROM gaps GROUP BY session_id)
        SELECT s.session_id, s.port, s.started_at, s.ended_at,
               date_diff('millisecond', s.started_at, coalesce(s.ended_at, r.last_ts, s.started_at)) / 1000.0
                   AS duration_s,
               coalesce(r.readings, 0) AS readings, coalesce(j.rejects, 0) AS rejects, coalesce(g.gaps, 0) AS gaps
        FROM sessions s LEFT JOIN r USING (session_id) LEFT JOIN j USING (session_id) LEFT JOIN g USING (session_id)
        WHERE (?::TIMESTAMP IS NULL OR coalesce(s.ended_at, r.last_ts, s.started_at) >= ?)
          AND (?::TIMESTAMP IS NULL OR s.started_at <= ?)
        ORDER BY s.started_at DESC""",
        [start, start, end, end],
    ).df()
    if df.empty:
        return df
    ids = list(df["session_id"])
    flagged = conn.execute(
        f"""
        SELECT session_id, detector, count(*) FILTER (WHERE state = 'anomaly') AS n FROM states
        WHERE session_id IN ({",".join("?" * len(ids))}) GROUP BY session_id, detector""",
        ids,
    ).df()
    if not flagged.empty:
        wide = flagged.pivot(index="session_id", columns="detector", values="n").fillna(0).astype("int64")
        wide.columns = [f"anomalies {c}" for c in wide.columns]
        df = df.merge(wide, left_on="session_id", right_index=True, how="left")
        for c in wide.columns:
            df[c] = df[c].fillna(0).astype("int64")
    return df


# --- anomalies and exports ---------------------------------------------------------------------


@named
def anomalies(conn: duckdb.DuckDBPyConnection, f: Filters, limit: int | None = None) -> pd.DataFrame:
    """The flagged readings for the filters: one row per (reading, detector) that flagged it."""
    where, params = f.where("s", detectors=True)
    return conn.execute(
        f"""
        SELECT s.ts, s.session_id, s.seq, s.sensor, r.value, s.detector, s.score
        FROM states s JOIN readings r USING (session_id, seq)
        WHERE s.state = 'anomaly' AND {where}
        ORDER BY s.ts, s.session_id, s.seq, s.detector {"LIMIT ?" if limit else ""}""",
        [*params, *([limit] if limit else [])],
    ).df()


@named
def readings(conn: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Every reading for the filters (session, sensor, time range), oldest first."""
    where, params = f.where("r")
    return conn.execute(
        f"""
        SELECT r.ts, r.session_id, r.seq, r.sensor, r.value FROM readings r WHERE {where}
        ORDER BY r.ts, r.session_id, r.seq""",
        params,
    ).df()


@named
def count_readings(conn: duckdb.DuckDBPyConnection, f: Filters) -> int:
    where, params = f.where("r")
    return conn.execute(f"SELECT count(*) FROM readings r WHERE {where}", params).fetchone()[0]


# --- labels ------------------------------------------------------------------------------------


@named
def labels(conn: duckdb.DuckDBPyConnection, f: Filters = Filters()) -> pd.DataFrame:
    """Operator labels for the filters (an older database without the table gives none)."""
    if not has_table(conn, "labels"):
        return pd.DataFrame(columns=["ts", "session_id", "seq", "sensor", "verdict", "detector", "note", "made_at"])
    where, params = Filters(sessions=f.sessions, sensors=f.sensors, start=f.start, end=f.end, exclude=f.exclude).where(
        "l"
    )
    return conn.execute(
        f"""
        SELECT l.ts, l.session_id, l.seq, l.sensor, l.verdict, l.detector, l.note, l.made_at
        FROM labels l WHERE {where} ORDER BY l.ts""",
        params,
    ).df()


# --- comparing algorithms ----------------------------------------------------------------------


def _judged_sql(f: Filters) -> tuple[str, list]:
    """(session_id, seq, sensor, ts, detector, flagged) for readings each detector has judged."""
    where, params = f.where("s", detectors=True)
    return (
        f"SELECT s.session_id, s.seq, s.sensor, s.ts, s.detector, s.state = 'anomaly' AS flagged "
        f"FROM states s WHERE s.state <> 'initializing' AND {where}",
        params,
    )


@named
def per_detector(conn: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per detector: readings judged, anomalies flagged and their share."""
    sql, params = _judged_sql(f)
    return conn.execute(
        f"""
        SELECT detector, count(*) AS judged, count(*) FILTER (WHERE flagged) AS flagged,
               count(*) FILTER (WHERE flagged) / greatest(count(*), 1) AS share
        FROM ({sql}) GROUP BY detector ORDER BY detector""",
        params,
    ).df()


@named
def pair_counts(conn: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """For each ordered pair of detectors, over readings both judged: n11 (both flagged), n10,
    n01, n00. Agreement measures (lib.detect.compare) come from these four counts."""
    sql, params = _judged_sql(f)
    return conn.execute(
        f"""
        WITH j AS ({sql})
        SELECT a.detector AS a, b.detector AS b,
               count(*) FILTER (WHERE a.flagged AND b.flagged) AS n11,
               count(*) FILTER (WHERE a.flagged AND NOT b.flagged) AS n10,
               count(*) FILTER (WHERE NOT a.flagged AND b.flagged) AS n01,
               count(*) FILTER (WHERE NOT a.flagged AND NOT b.flagged) AS n00
        FROM j a JOIN j b ON a.session_id = b.session_id AND a.seq = b.seq
        GROUP BY a.detector, b.detector ORDER BY a.detector, b.detector""",
        params,
    ).df()


@named
def disagreements(conn: duckdb.DuckDBPyConnection, f: Filters, limit: int = 5000) -> pd.DataFrame:
    """Readings where the chosen detectors disagree (some flagged, some did not): one row per
    (reading, detector) with its verdict, for a timeline."""
    sql, params = _judged_sql(f)
    return conn.execute(
        f"""
        WITH j AS ({sql}),
        split AS (SELECT session_id, seq FROM j GROUP BY session_id, seq
                  HAVING bool_or(flagged) AND NOT bool_and(flagged) ORDER BY min(ts) LIMIT ?)
        SELECT j.ts, j.session_id, j.seq, j.sensor, j.detector,
               CASE WHEN j.flagged THEN 'flagged' ELSE 'not flagged' END AS verdict
        FROM j SEMI JOIN split USING (session_id, seq) ORDER BY j.ts, j.detector""",
        [*params, limit],
    ).df()


#: readings after an injection's last one that still count as its own: the effect of a one-reading
#: spike on a detector that needs a reading to react, and the reading that ends a level shift
#: (lib.detect.evaluation measures the same way)
TRUTH_TOLERANCE = 3
#: an injection's first reading arrives this long after its end at the latest (the producer stamps
#: the time a line is read, a moment after the board wrote it); later ones belong to something else
TRUTH_SLACK_S = 10


def truth_sql(f: Filters) -> tuple[str, list]:
    """(item, session_id, seq) of every reading known to be an anomaly for the filters, `item`
    naming the anomaly it belongs to.

    A simulator injection (the `truth` table holds its sensor and time span) is mapped to a range
    of its sensor's readings in one session, by sequence number: from the first batch of readings
    received at or after its start (every reading sharing that receive time: lines a board wrote
    together are stamped together, so the time cannot tell which of them it changed) to the last
    one received by its end, plus TRUTH_TOLERANCE readings. A dropout has no readings: its range is the
    reading before the silence (where the no-data rule's row sits) and the tolerance after it.
    Malformed lines are rejects, not readings, and have no range. Operator labels override: a
    rejected reading is no anomaly, and a reading marked confirmed or missed outside every
    injection is an anomaly of its own (a negative item)."""
    where, params = Filters(sessions=f.sessions, sensors=f.sensors, start=f.start, end=f.end, exclude=f.exclude).where(
        "r"
    )
    sql = f"""
        WITH r AS (SELECT r.session_id, r.seq, r.sensor, r.ts,
                          row_number() OVER (PARTITION BY r.session_id, r.sensor ORDER BY r.seq) AS k
                   FROM readings r WHERE {where}),
        at_ts AS (SELECT session_id, sensor, ts, min(k) AS k_min, max(k) AS k_max FROM r GROUP BY ALL),
        t AS (SELECT row_number() OVER (ORDER BY started_at, sensor, kind, run_id) AS item,
                     sensor, kind, started_at, ended_at
              FROM truth WHERE kind <> 'malformed'),
        first AS (SELECT t.item, t.kind, t.started_at, t.ended_at, a.session_id, a.sensor, a.k_min AS k0,
                         a.k_max AS k0_max
                  FROM t ASOF JOIN at_ts a ON t.sensor = a.sensor AND a.ts >= t.started_at
                  WHERE a.ts <= t.ended_at + to_seconds(?)),
        last AS (SELECT f.item, max(a.k_max) AS k1 FROM first f JOIN at_ts a
                   ON a.session_id = f.session_id AND a.sensor = f.sensor AND a.ts BETWEEN f.started_at AND f.ended_at
                 GROUP BY f.item),
        spans AS (SELECT f.item, f.session_id, f.sensor,
                         CASE WHEN f.kind = 'dropout' THEN f.k0 - 1 ELSE f.k0 END AS lo,
                         CASE WHEN f.kind = 'dropout' THEN f.k0 - 1 ELSE greatest(f.k0_max, coalesce(l.k1, f.k0)) END
                           + ? AS hi
                  FROM first f LEFT JOIN last l USING (item)),
        injected AS (SELECT s.item, r.session_id, r.seq FROM spans s JOIN r
                       ON r.session_id = s.session_id AND r.sensor = s.sensor AND r.k BETWEEN s.lo AND s.hi),
        lab AS (SELECT l.session_id, l.seq, l.verdict IN ('confirmed', 'missed') AS yes
                FROM labels l SEMI JOIN r USING (session_id, seq))
        SELECT item, session_id, seq FROM injected
          ANTI JOIN (SELECT session_id, seq FROM lab WHERE NOT yes) USING (session_id, seq)
        UNION ALL
        SELECT -row_number() OVER (ORDER BY session_id, seq) AS item, session_id, seq
          FROM (SELECT session_id, seq FROM lab ANTI JOIN injected USING (session_id, seq) WHERE yes)"""
    return sql, [*params, TRUTH_SLACK_S, TRUTH_TOLERANCE]


@named
def truth_available(conn: duckdb.DuckDBPyConnection, f: Filters) -> dict[str, int]:
    """How much truth the filters' range holds: simulator injections and operator labels."""
    lw, lp = Filters(sessions=f.sessions, sensors=f.sensors, start=f.start, end=f.end, exclude=f.exclude).where("l")
    tw_parts, tp = ["TRUE"], []
    if f.sensors:
        tw_parts.append(f"sensor IN ({','.join('?' * len(f.sensors))})")
        tp.extend(f.sensors)
    if f.exclude:
        tw_parts.append(f"sensor NOT IN ({','.join('?' * len(f.exclude))})")
        tp.extend(f.exclude)
    if f.start is not None:
        tw_parts.append("ended_at >= ?")
        tp.append(f.start)
    if f.end is not None:
        tw_parts.append("started_at <= ?")
        tp.append(f.end)
    tw_parts.append("kind <> 'malformed'")  # a reject, not a reading: Compare has nothing to match it to
    injections = conn.execute(f"SELECT count(*) FROM truth WHERE {' AND '.join(tw_parts)}", tp).fetchone()[0]
    labelled = (
        conn.execute(f"SELECT count(*) FROM labels l WHERE {lw}", lp).fetchone()[0] if has_table(conn, "labels") else 0
    )
    return {"injections": injections, "labels": labelled}


@named
def scores_vs_truth(conn: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per detector, against `truth_sql`: `anomalies` (the injections and labelled readings of the
    filters' range), `caught` (those with at least one of their readings flagged by it), and over
    the readings it judged, `tp` and `fp` (flagged readings that are, and are not, an anomaly's).
    Recall is caught / anomalies; precision tp / (tp + fp) (lib.detect.compare.precision_recall_f1)."""
    if not has_table(conn, "labels"):
        return pd.DataFrame(columns=["detector", "anomalies", "caught", "tp", "fp"])
    sql, params = _judged_sql(f)
    tsql, tparams = truth_sql(f)
    return conn.execute(
        f"""
        WITH j AS ({sql}), t AS ({tsql}),
        yes AS (SELECT DISTINCT session_id, seq FROM t),
        flags AS (SELECT j.detector, count(*) FILTER (WHERE y.seq IS NOT NULL) AS tp,
                         count(*) FILTER (WHERE y.seq IS NULL) AS fp
                  FROM j LEFT JOIN yes y USING (session_id, seq) WHERE j.flagged GROUP BY j.detector),
        caught AS (SELECT j.detector, count(DISTINCT t.item) AS caught
                   FROM j JOIN t USING (session_id, seq) WHERE j.flagged GROUP BY j.detector)
        SELECT d.detector, (SELECT count(DISTINCT item) FROM t) AS anomalies, coalesce(c.caught, 0) AS caught,
               coalesce(fl.tp, 0) AS tp, coalesce(fl.fp, 0) AS fp
        FROM (SELECT DISTINCT detector FROM j) d LEFT JOIN caught c USING (detector)
          LEFT JOIN flags fl USING (detector)
        ORDER BY d.detector""",
        [*params, *tparams],
    ).df()


@named
def session_sensors(conn: duckdb.DuckDBPyConnection, session: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT sensor FROM readings WHERE session_id = ? ORDER BY sensor", [session]
        ).fetchall()
    ]


@named
def session_series(conn: duckdb.DuckDBPyConnection, session: str, sensor: str) -> pd.DataFrame:
    """All readings of one sensor in one session, in order (what a replay feeds a detector)."""
    return conn.execute(
        """
        SELECT session_id, seq, ts, value FROM readings WHERE session_id = ? AND sensor = ?
        ORDER BY seq""",
        [session, sensor],
    ).df()


@named
def live_flags(conn: duckdb.DuckDBPyConnection, session: str, sensor: str, detector: str) -> pd.DataFrame:
    """What `detector` said live on one sensor of one session: seq, state, score."""
    return conn.execute(
        """
        SELECT seq, state, score FROM states WHERE session_id = ? AND sensor = ? AND detector = ?
        ORDER BY seq""",
        [session, sensor, detector],
    ).df()


# --- one refresh of the Live view -------------------------------------------------------------

LIVE_MAX_CHARTS = 12  # charts the Live view draws when no sensor is chosen
CHART_BUCKETS = 600  # time buckets of a thinned line: about one per pixel of a chart
INIT_LOOKBACK = timedelta(hours=6)  # how far back Live looks for detectors still warming up


@named
def live_snapshot(
    conn: duckdb.DuckDBPyConnection,
    sensors: Sequence[str],
    since: datetime,
    now: datetime,
    max_charts: int = LIVE_MAX_CHARTS,
) -> dict:
    """Everything one refresh of the Live view draws (see `live_fetch`)."""
    return live_shape(live_fetch(conn, sensors, since, now, max_charts))


@named
def live_fetch(
    conn: duckdb.DuckDBPyConnection,
    sensors: Sequence[str],
    since: datetime,
    now: datetime,
    max_charts: int = LIVE_MAX_CHARTS,
    order: Sequence[str] = (),
    hidden: Sequence[str] = (),
) -> dict:
    """The queries of one refresh of the Live view, each reading the span once for all the charted
    sensors: the app's refresh, and the bench's stand-in for a viewer. `live_shape` makes the
    snapshot once the connection is closed, so the store waits for the queries only. With no
    sensor chosen, the health table covers every sensor and the first `max_charts` by name are
    charted: a page of 100 live charts helps no one, and each one drawn adds its span's flagged
    readings to every refresh. The operator's `order` (names) comes first, then the others by
    name; `hidden` sensors are left out."""
    found = health(conn, now)
    if hidden:
        found = found[~found["sensor"].isin(list(hidden))].reset_index(drop=True)
    rank = {name: i for i, name in enumerate(order)}
    active = sorted(found["sensor"], key=lambda name: (rank.get(name, len(rank)), name))
    raw = {
        "totals": totals(conn),
        "health": found,
        "lag": detector_lag(conn, now),
        "charted_of": len(sensors) or len(found),
        "names": tuple(sensors) or tuple(active)[:max_charts],
    }
    if raw["names"]:
        raw["charts"] = charts_fetch(conn, raw["names"], since, now, CHART_BUCKETS)
        raw["bucket_s"] = (now - since).total_seconds() / CHART_BUCKETS
        raw["gaps"] = gaps(conn, since, now)
        # A warm-up lasts minutes: over a long span its stretch is too thin to see, and looking
        # for it would read every state of the span.
        recent = max(since, now - INIT_LOOKBACK)
        raw["spans"] = initializing_spans_many(conn, raw["names"], recent, now)
        raw["progress"] = init_progress_many(conn, raw["names"], recent)
    return raw


def live_shape(raw: dict) -> dict:
    """The Live view's snapshot from `live_fetch`'s frames: per charted sensor its line (cut into
    runs at sessions, gaps and silences: lib.page.runs), the breaks, marks, initializing
    stretches and warm-up progress."""
    from lib.page.runs import split_runs

    snap = {k: raw[k] for k in ("totals", "health", "lag", "charted_of")}
    snap["sensors"] = {}
    if not raw["names"]:
        return snap
    charts = charts_shape(*raw["charts"])
    spans, progress = raw["spans"], raw["progress"]
    spans_of = {k: v.drop(columns="sensor").reset_index(drop=True) for k, v in spans.groupby("sensor")}
    progress_of = {k: v.drop(columns="sensor").reset_index(drop=True) for k, v in progress.groupby("sensor")}
    for sensor in raw["names"]:
        line, marks = charts.get(sensor, (_EMPTY_LINE, _EMPTY_MARKS))
        line, breaks = split_runs(line, raw["gaps"], raw["bucket_s"])
        snap["sensors"][sensor] = {
            "line": line,
            "marks": marks,
            "breaks": breaks,
            "init": spans_of.get(sensor, spans.drop(columns="sensor").iloc[:0]),
            "progress": progress_of.get(sensor, progress.drop(columns="sensor").iloc[:0]),
        }
    return snap


# --- anomaly events (lib.detect.events; filed by the store, lib.store.events) ------------------

EVENT_STATES = ("open", "acknowledged", "resolved")


@wire_type
@dataclass(frozen=True)
class EventFilters:
    """The Events view's choices: empty tuples mean "all"; dates bound the event's start (UTC)."""

    sensors: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    event_id: str | None = None
    exclude: tuple[str, ...] = ()  # hidden sensors ([sensors.<name>] hidden)


@named
def events(conn: duckdb.DuckDBPyConnection, f: EventFilters = EventFilters(), limit: int = 5000) -> pd.DataFrame:
    """Events for the Events view and its CSV: open (not resolved) first, then newest first."""
    from lib.store.events import STATE_SQL

    if not has_table(conn, "events"):
        return pd.DataFrame(columns=["event_id", "state", "sensor", "severity"])
    parts, params = ["TRUE"], []
    if f.exclude:
        parts.append(f"sensor NOT IN ({','.join('?' * len(f.exclude))})")
        params.extend(f.exclude)
    for column, values in (("sensor", f.sensors), ("severity", f.severities), ("state", f.states)):
        if values:
            parts.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    if f.start is not None:
        parts.append("start_ts >= ?")
        params.append(f.start)
    if f.end is not None:
        parts.append("start_ts <= ?")
        params.append(f.end)
    if f.event_id:
        parts.append("event_id = ?")
        params.append(f.event_id)
    return conn.execute(
        f"""
        SELECT event_id, state, sensor, severity, start_ts, end_ts, closed_at, start_value, peak_value, peak_ts,
               peak_score, members AS detectors, n_flagged, baseline, acked_by, acked_at, ack_note,
               resolved_by, resolved_at, resolve_note, session_id, start_seq, end_seq
        FROM (SELECT *, {STATE_SQL} AS state FROM events)
        WHERE {" AND ".join(parts)}
        ORDER BY state = 'resolved', start_ts DESC LIMIT ?""",
        params + [limit],
    ).df()


@named
def open_event_count(conn: duckdb.DuckDBPyConnection) -> int:
    """Events not resolved yet (by themselves or by an operator): the page title shows it."""
    if not has_table(conn, "events"):
        return 0
    return conn.execute("SELECT count(*) FROM events WHERE closed_at IS NULL AND resolved_at IS NULL").fetchone()[0]


@named
def open_event_spans(
    conn: duckdb.DuckDBPyConnection, sensors: Sequence[str], since: datetime, now: datetime
) -> pd.DataFrame:
    """Unresolved events of `sensors` overlapping [since, now], as spans (sensor, start, end,
    severity, event_id) for the Live charts; an open event runs to `now`."""
    if not has_table(conn, "events") or not sensors:
        return pd.DataFrame({"sensor": [], "start": [], "end": [], "severity": [], "event_id": []})
    return conn.execute(
        f"""
        SELECT sensor, greatest(start_ts, ?) AS start, ? AS "end", severity, event_id FROM events
        WHERE closed_at IS NULL AND resolved_at IS NULL AND sensor IN ({",".join("?" * len(sensors))})
        ORDER BY start_ts""",
        [since, now, *sensors],
    ).df()


@named
def event_readings(conn: duckdb.DuckDBPyConnection, event_id: str) -> pd.DataFrame:
    """The readings an event's detectors or rules flagged (session_id, seq, sensor, ts, detector:
    the first that flagged it): what labelling the event labels."""
    return conn.execute(
        """
        SELECT s.session_id, s.seq, s.sensor, min(s.ts) AS ts, min(s.detector) AS detector
        FROM events e JOIN states s ON s.sensor = e.sensor AND s.ts BETWEEN e.start_ts AND e.end_ts
        WHERE e.event_id = ? AND s.state = 'anomaly'
        GROUP BY s.session_id, s.seq, s.sensor ORDER BY ts""",
        [event_id],
    ).df()


# --- checks: what tests, benches and scripts ask a running store ----------------------------
# The store's socket runs named queries only, so a check on a running system is one of these.


@named
def value_counts(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, float, int]]:
    """(sensor, value, times stored) over every reading: what a board's ledger is checked against."""
    return conn.execute("SELECT sensor, value, count(*) FROM readings GROUP BY ALL").fetchall()


@named
def judged_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """{detector: (state rows, distinct readings judged)}: equal when each reading is judged once."""
    return {
        d: (n, k)
        for d, n, k in conn.execute(
            "SELECT detector, count(*), count(DISTINCT (session_id, seq)) FROM states GROUP BY 1"
        ).fetchall()
    }


@named
def repeated_readings(conn: duckdb.DuckDBPyConnection) -> int:
    """Readings stored more than once (same session and sequence number)."""
    return conn.execute("SELECT count(*) - count(DISTINCT (session_id, seq)) FROM readings").fetchone()[0]


@named
def unjudged(conn: duckdb.DuckDBPyConnection, n_detectors: int) -> int:
    """Readings that do not have states from exactly `n_detectors` detectors."""
    return conn.execute(
        """
        SELECT count(*) FROM readings r LEFT JOIN (
            SELECT session_id, seq, count(DISTINCT detector) AS n FROM states GROUP BY ALL) s USING (session_id, seq)
        WHERE coalesce(s.n, 0) <> ?""",
        [n_detectors],
    ).fetchone()[0]


@named
def newest(conn: duckdb.DuckDBPyConnection) -> dict[str, datetime | None]:
    """The newest reading's and the newest state's time."""
    row = conn.execute("SELECT (SELECT max(ts) FROM readings), (SELECT max(ts) FROM states)").fetchone()
    return {"readings": row[0], "states": row[1]}


@named
def latest_session_states(conn: duckdb.DuckDBPyConnection) -> int:
    """States stored for the session that started last."""
    return conn.execute("""SELECT count(*) FROM states WHERE session_id =
        (SELECT session_id FROM sessions ORDER BY started_at DESC LIMIT 1)""").fetchone()[0]


@named
def gap_list(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, datetime, datetime | None, str | None]]:
    """Every gap: session, start, end (None while open), reason; oldest first."""
    return conn.execute("SELECT session_id, started_at, ended_at, reason FROM gaps ORDER BY started_at").fetchall()


@named
def reject_reasons(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return dict(conn.execute("SELECT reason, count(*) FROM rejects GROUP BY 1").fetchall())
