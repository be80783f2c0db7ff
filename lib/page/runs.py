"""Where a sensor's line must break: a chart joins consecutive points, so a restart or an
unplugged board would be drawn as a ramp from the last reading before to the first after.

A line is cut into runs (a `run` number per point, which the chart draws as separate lines) at
- a session boundary (the producer restarted, or the board came back as a new session),
- a recorded gap (the producer's `gaps` table: port lost, unplugged),
- a silence: no reading for longer than 10 s, five of the sensor's usual intervals, or two and a
  half time buckets of the thinned line, whichever is longest (thinning itself leaves up to two
  buckets between points, which is not a silence).
Each cut is returned as a break (from the last point before to the first after, with what it was),
which the chart marks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_SILENCE_S = 10.0
BREAK_COLUMNS = ("start", "end", "what", "seconds")


def no_breaks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start": pd.Series(dtype="datetime64[us]"),
            "end": pd.Series(dtype="datetime64[us]"),
            "what": pd.Series(dtype=object),
            "seconds": pd.Series(dtype=float),
        }
    )


def silence_s(ts: pd.Series, bucket_s: float) -> float:
    """How long without a reading counts as a silence for this line (see the module docstring)."""
    usual = ts.diff().dt.total_seconds().median() if len(ts) > 2 else 0.0
    return max(MIN_SILENCE_S, 5 * (usual if np.isfinite(usual) else 0.0), 2.5 * bucket_s)


def split_runs(
    line: pd.DataFrame, gaps: pd.DataFrame | None = None, bucket_s: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`line` (ts, value, session_id; oldest first) with a `run` column, and its breaks (start,
    end, what, seconds). `gaps` (session_id, started_at, ended_at, reason): the recorded gaps."""
    line = line.reset_index(drop=True)
    if len(line) < 2:
        return line.assign(run=0), no_breaks()
    ts = pd.to_datetime(line["ts"])
    session = line["session_id"].astype(object)
    cut = np.zeros(len(line), dtype=bool)
    what = np.full(len(line), None, dtype=object)

    silent = (ts.diff().dt.total_seconds() > silence_s(ts, bucket_s)).to_numpy()
    cut |= silent
    what[silent] = "silent"
    if gaps is not None and len(gaps):
        # a gap recorded between two points of its session (the first point after it is where the line resumes)
        after = np.searchsorted(ts.to_numpy(), pd.to_datetime(gaps["started_at"]).to_numpy(), side="right")
        for i, gap_session, reason in zip(after, gaps["session_id"], gaps["reason"]):
            if 0 < i < len(line) and session.iloc[i - 1] == gap_session:
                cut[i] = True
                what[i] = f"gap: {reason or 'no data'}"
    new_session = (session != session.shift()).to_numpy(copy=True)
    new_session[0] = False
    cut |= new_session
    for i in np.flatnonzero(new_session):
        what[i] = f"new session {session.iloc[i]}"
    cut[0] = False

    at = np.flatnonzero(cut)
    breaks = pd.DataFrame({"start": ts.iloc[at - 1].to_numpy(), "end": ts.iloc[at].to_numpy(), "what": what[at]})
    breaks["seconds"] = (breaks["end"] - breaks["start"]).dt.total_seconds()
    return line.assign(run=np.cumsum(cut)), breaks
