"""Sessions: the sessions between two dates; selecting one opens it in the views that use the
shared filters."""

import streamlit as st

from lib.page import reads, views

TITLE = "Sessions"
ORDER = 30

ctx = views.current()


def open_session(ids: list[str]) -> None:
    rows = st.session_state["sessions_table"].selection.rows
    if rows:
        st.session_state["session"] = ids[rows[0]]
        st.session_state["whole_range"] = True


clock = ctx.clock
st.title("Sessions")
views.as_of_bar(ctx.clock)
lo, hi = reads.time_bounds(ctx.db)
today = clock.now().date()
default = ((clock.wall(lo) if lo is not None else clock.now()).date(), today)
picked = st.date_input(f"Sessions between (dates, {clock.name})", value=default, key="sessions_dates")
d0, d1 = (picked[0], picked[-1]) if isinstance(picked, (tuple, list)) and picked else default
if d1 < d0:
    st.error(f"The range ends ({d1}) before it starts ({d0}): pick an end after the start.")
    views.stop()
start, end = clock.day_bounds(d0, d1)
found = reads.sessions(ctx.db, start, end)
if found.empty:
    st.info(f"No session between {d0} and {d1}." if not ctx.sessions.empty else "No session yet.")
    views.stop()
st.caption(f"{len(found)} session(s) between {d0} and {d1}. Select one to open it in Compare, Anomalies and Labels.")
ids = list(found["session_id"])
found = clock.local_frame(found, ("started_at", "ended_at"))
per_algo = [c for c in found.columns if c.startswith("anomalies ")]
found = found.assign(
    flagged=[" · ".join(f"{c.removeprefix('anomalies ')} {row[c]}" for c in per_algo) for _, row in found.iterrows()]
)
st.dataframe(
    found,
    hide_index=True,
    key="sessions_table",
    on_select=lambda: open_session(ids),
    selection_mode="single-row",
    column_order=["session_id", "port", "started_at", "duration_s", "readings", "rejects", "gaps", "flagged"],
    column_config={
        "session_id": st.column_config.TextColumn("session"),
        "started_at": st.column_config.DatetimeColumn(f"started ({clock.name})", format="YYYY-MM-DD HH:mm"),
        "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
        "flagged": st.column_config.TextColumn("anomalies per algorithm", width="large"),
    },
)
if st.session_state.get("session") in ids:
    st.success(f"Open: **{st.session_state['session']}** (sidebar filters).")
