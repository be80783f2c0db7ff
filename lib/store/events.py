"""The store's side of anomaly events: upsert the detectors' snapshots, apply operators' actions.

A snapshot (lib.detect.events.Event) replaces the stored row only when its `rev` is at least the
stored one, so a replay after a crash, or a snapshot that arrives late, never takes an event back.
The operator's columns (acknowledged, resolved) are only written by actions, never by snapshots.
"""

from __future__ import annotations

import pyarrow as pa

from lib.messages import ACK, RESOLVE, EventAction

_DETECTOR_COLUMNS = (
    "sensor",
    "session_id",
    "start_seq",
    "start_ts",
    "start_value",
    "end_seq",
    "end_ts",
    "peak_seq",
    "peak_ts",
    "peak_value",
    "peak_score",
    "members",
    "n_flagged",
    "max_agree",
    "severity",
    "silent",
    "closed_at",
    "rev",
    "baseline",
)
# What the events table's line in lib.store.writer.WRITES writes: the detector's columns, the times
# among them in microseconds, and a snapshot that replaces the stored row only if not older.
COLUMNS = ("event_id",) + _DETECTOR_COLUMNS
TIMES = ("start_ts", "end_ts", "peak_ts", "closed_at")
CONFLICT = (
    "(event_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _DETECTOR_COLUMNS)
    + " WHERE excluded.rev >= events.rev"
)


def snapshot_frame(snapshots) -> pa.Table:
    """The snapshots (lib.detect.events payloads) as an Arrow table of COLUMNS."""
    rows = list(snapshots)
    col = lambda key: [r.get(key) for r in rows]  # noqa: E731 - a column of the rows
    return pa.table(
        {
            "event_id": pa.array(col("id"), pa.string()),
            "sensor": pa.array(col("sensor"), pa.string()),
            "session_id": pa.array(col("session"), pa.string()),
            "start_seq": pa.array(col("start_seq"), pa.int64()),
            "start_ts": pa.array(col("start_ts_us"), pa.int64()),
            "start_value": pa.array(col("start_value"), pa.float64()),
            "end_seq": pa.array(col("end_seq"), pa.int64()),
            "end_ts": pa.array(col("end_ts_us"), pa.int64()),
            "peak_seq": pa.array(col("peak_seq"), pa.int64()),
            "peak_ts": pa.array(col("peak_ts_us"), pa.int64()),
            "peak_value": pa.array(col("peak_value"), pa.float64()),
            "peak_score": pa.array(col("peak_score"), pa.float64()),
            "members": pa.array([",".join(m) for m in col("members")], pa.string()),
            "n_flagged": pa.array(col("n_flagged"), pa.int64()),
            "max_agree": pa.array(col("max_agree"), pa.int32()),
            "severity": pa.array(col("severity"), pa.string()),
            "silent": pa.array(col("silent"), pa.bool_()),
            "closed_at": pa.array(col("closed_ts_us"), pa.int64()),
            "rev": pa.array(col("rev"), pa.int64()),
            "baseline": pa.array(col("baseline"), pa.float64()),
        }
    )


def apply_actions(conn, actions: list[EventAction]) -> None:
    """File operators' actions on events, in the order they were made (after the batch's
    snapshots)."""
    for a in sorted(actions, key=lambda a: a.made_us):
        if a.action == ACK:
            conn.execute(
                "UPDATE events SET acked_by = ?, acked_at = make_timestamp(?), ack_note = ?"
                " WHERE event_id = ? AND (acked_at IS NULL OR acked_at <= make_timestamp(?))",
                (a.by, a.made_us, a.note, a.event_id, a.made_us),
            )
        elif a.action == RESOLVE:
            conn.execute(
                "UPDATE events SET resolved_by = ?, resolved_at = make_timestamp(?), resolve_note = ?"
                " WHERE event_id = ? AND resolved_at IS NULL",
                (a.by, a.made_us, a.note, a.event_id),
            )
        else:
            raise ValueError(f"unknown event action {a.action!r}")


# The event's lifecycle state, from its columns: what the page filters on and shows.
STATE_SQL = (
    "CASE WHEN resolved_at IS NOT NULL OR closed_at IS NOT NULL THEN 'resolved'"
    " WHEN acked_at IS NOT NULL THEN 'acknowledged' ELSE 'open' END"
)
