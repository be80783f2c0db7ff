"""What the store keeps beside the readings so that long spans chart fast.

A 30-day chart of one sensor reads tens of millions of readings and twice as many states: too slow
for a page (bench/bench_queries.py). Two small tables, kept by the writer in the same transaction
as the rows they come from, answer it instead:

- `readings_1m`: per sensor, session and minute, the count, the lowest and the highest reading
  and when they were (a chart of any span over a minute per pixel needs nothing finer);
- `flags`: every flagged state with its reading's value (a state does not carry it), so that an
  anomaly is drawn at its own reading without reading the states or the readings of the span.

Both are derived: `rebuild` makes them again from readings and states (the migration that adds
them does, on files written before), and retention deletes them with the rows they summarise.
"""

from __future__ import annotations

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS readings_1m (
    sensor     VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    minute     TIMESTAMP NOT NULL,   -- the minute's start, UTC
    n          BIGINT NOT NULL,      -- readings in it
    lo         DOUBLE NOT NULL,      -- the lowest and when
    lo_ts      TIMESTAMP NOT NULL,
    hi         DOUBLE NOT NULL,      -- the highest and when
    hi_ts      TIMESTAMP NOT NULL,
    PRIMARY KEY (sensor, session_id, minute)
);
CREATE TABLE IF NOT EXISTS flags (
    sensor     VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TIMESTAMP NOT NULL,
    detector   VARCHAR NOT NULL,
    score      DOUBLE,
    value      DOUBLE                -- NULL until its reading is stored (states may come first over Kafka)
);
"""

# From new readings (a relation with sensor, session_id, ts TIMESTAMP, value): add them to their
# minutes. Within one statement a key appears once (GROUP BY), as ON CONFLICT requires.
_ROLLUP = """
INSERT INTO readings_1m
SELECT sensor, session_id, time_bucket(INTERVAL 1 MINUTE, ts) AS minute, count(*) AS n,
       min(value) AS lo, arg_min(ts, value) AS lo_ts, max(value) AS hi, arg_max(ts, value) AS hi_ts
FROM ({source}) GROUP BY ALL
ON CONFLICT DO UPDATE SET
    n = readings_1m.n + excluded.n,
    lo_ts = CASE WHEN excluded.lo < readings_1m.lo THEN excluded.lo_ts ELSE readings_1m.lo_ts END,
    lo = least(readings_1m.lo, excluded.lo),
    hi_ts = CASE WHEN excluded.hi > readings_1m.hi THEN excluded.hi_ts ELSE readings_1m.hi_ts END,
    hi = greatest(readings_1m.hi, excluded.hi)
"""

# From new states (sensor, session_id, seq, ts TIMESTAMP, detector, state, score): the flagged
# ones, with their reading's value when it is stored. The readings are read only between the
# flagged states' first and last times, given as values so that zone maps skip the rest of the
# table (a bound computed inside the query made every write read the whole table: 25 ms at 5
# million readings).
_FLAGS = """
INSERT INTO flags
WITH f AS (SELECT sensor, session_id, seq, ts, detector, score FROM ({source}) WHERE state = 'anomaly'),
     r AS (SELECT session_id, seq, value FROM readings WHERE ts >= ? AND ts <= ?)
SELECT f.sensor, f.session_id, f.seq, f.ts, f.detector, f.score, r.value
FROM f LEFT JOIN r ON r.session_id = f.session_id AND r.seq = f.seq
"""

# From new readings: the flags that came before their reading get its value.
_FILL = """
UPDATE flags SET value = n.value FROM ({source}) n
WHERE flags.value IS NULL AND flags.session_id = n.session_id AND flags.seq = n.seq
"""


def add_readings(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Keep both tables up to date with the new readings `source` (SQL), in the writer's transaction."""
    conn.execute(_ROLLUP.format(source=source))
    conn.execute(_FILL.format(source=source))


def add_states(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Keep `flags` up to date with the new states `source` (SQL), in the writer's transaction."""
    first, last = conn.execute(f"SELECT min(ts), max(ts) FROM ({source}) WHERE state = 'anomaly'").fetchone()
    if first is not None:
        conn.execute(_FLAGS.format(source=source), [first, last])


def prune(conn: duckdb.DuckDBPyConnection, older_than) -> None:
    """After readings and states older than `older_than` were deleted: the same for these tables,
    the minute cut in two summarising the readings that are left of it."""
    conn.execute("DELETE FROM flags WHERE ts < ?", [older_than])
    conn.execute("DELETE FROM readings_1m WHERE minute <= time_bucket(INTERVAL 1 MINUTE, ?::TIMESTAMP)", [older_than])
    conn.execute(
        _ROLLUP.format(
            source="""
        SELECT sensor, session_id, ts, value FROM readings
        WHERE ts >= $cut AND ts < time_bucket(INTERVAL 1 MINUTE, $cut::TIMESTAMP) + INTERVAL 1 MINUTE"""
        ),
        {"cut": older_than},
    )


def rebuild(conn: duckdb.DuckDBPyConnection) -> None:
    """Make both tables from every stored reading and state (they are emptied first)."""
    conn.execute(DDL)
    conn.execute("DELETE FROM readings_1m")
    conn.execute("DELETE FROM flags")
    conn.execute(_ROLLUP.format(source="SELECT sensor, session_id, ts, value FROM readings"))
    conn.execute("""
        INSERT INTO flags
        SELECT s.sensor, s.session_id, s.seq, s.ts, s.detector, s.score, r.value
        FROM states s LEFT JOIN readings r USING (session_id, seq) WHERE s.state = 'anomaly'""")
