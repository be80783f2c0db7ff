"""Events: one row per anomaly event (a run of flagged readings on one sensor), open ones first.
Acknowledge, resolve and label them from the list; a notification's link opens one event here,
charted around its time, with what was sent about it."""

from datetime import timedelta

import duckdb
import pandas as pd
import streamlit as st

from lib.alerts.notifier import outbox_path
from lib.alerts.outbox import delivery_states
from lib.detect.events import SEVERITIES
from lib.page import charts, export, reads, views
from lib.page import events as event_actions
from lib.page.queries import EVENT_STATES, EventFilters

TITLE = "Events"
ORDER = 15

ctx = views.current()
db, config, clock = ctx.db, ctx.config, ctx.clock
st.title("Events")

linked = st.query_params.get("event")
c1, c2, c3, c4 = st.columns([3, 2, 3, 3])
sensors = c1.multiselect(
    "Sensors", ctx.sensors, key="ev_sensors", placeholder="all sensors", format_func=ctx.book.label
)
severities = c2.multiselect("Severity", SEVERITIES, key="ev_severity", placeholder="all")
states = c3.multiselect("State", EVENT_STATES, key="ev_states", placeholder="all states")
dates = c4.date_input(f"Started (dates, {clock.name})", value=(), key="ev_dates")
start = end = None
if isinstance(dates, (tuple, list)) and dates:
    start, end = clock.day_bounds(dates[0], dates[-1])
f = EventFilters(
    sensors=tuple(sensors),
    severities=tuple(severities),
    states=tuple(states),
    start=start,
    end=end,
    event_id=linked,
    exclude=ctx.book.hidden,
)
try:
    rows = reads.events(db, f)
except duckdb.Error as exc:
    st.warning(f"The database is busy ({exc.__class__.__name__}); reload in a moment.")
    st.stop()

if linked:
    st.info(f"Showing the event of a notification: `{linked}`.")
    if st.button("Show every event", key="ev_all"):
        del st.query_params["event"]
        st.rerun()

# Deliveries in trouble are the operator's business even when no event is selected.
troubled = {}
for row in delivery_states(outbox_path(config)):
    if row[6] in ("retrying", "failed"):
        troubled.setdefault(row[6], set()).add(row[10])
if troubled:
    st.warning(
        "Notifications: "
        + ", ".join(f"{len(keys)} message(s) {state}" for state, keys in troubled.items())
        + ". Select an event to see the reason."
    )

n_open = int((rows["state"] != "resolved").sum()) if not rows.empty else 0
st.caption(
    f"{len(rows):,} event(s), {n_open:,} not resolved, for these filters (as of {clock.now():%H:%M:%S} {clock.name})."
)
st.download_button(
    "Download CSV (events)",
    export.to_csv(rows),
    file_name="vigie-events.csv",
    mime="text/csv",
    key="download_events",
    disabled=rows.empty,
    on_click="ignore",
)
if rows.empty:
    st.info("No event for these filters.")
    st.stop()

TIMES = ("start_ts", "end_ts", "closed_at", "peak_ts", "acked_at", "resolved_at")
picked = st.dataframe(
    clock.local_frame(rows, TIMES).assign(sensor=rows["sensor"].map(ctx.book.label)),
    hide_index=True,
    key="events_table",
    on_select="rerun",
    selection_mode="multi-row",
    column_config={
        c: st.column_config.DatetimeColumn(f"{c.replace('_', ' ')} ({clock.name})", format="YYYY-MM-DD HH:mm:ss")
        for c in TIMES
    },
)
chosen = rows.iloc[picked.selection.rows] if picked.selection.rows else rows.iloc[0:0]
if linked and chosen.empty:
    chosen = rows

# --- acknowledge / resolve / label the chosen events ---------------------------------------------
st.subheader("Act on the selected events" if not linked else "Act on this event")
if chosen.empty:
    st.caption("Select rows in the table to acknowledge, resolve or label them.")
else:
    a1, a2 = st.columns([1, 3])
    who = a1.text_input("Your name", key="ev_who")
    note = a2.text_input("Note", key="ev_note")
    b1, b2, b3, b4 = st.columns(4)
    todo = None
    if b1.button("Acknowledge", key="ev_ack"):
        todo = (event_actions.ACK, None)
    if b2.button(
        "Acknowledge: a real anomaly",
        key="ev_ack_confirmed",
        help="Acknowledge, and label every flagged reading of these events confirmed.",
    ):
        todo = (event_actions.ACK, event_actions.CONFIRMED)
    if b3.button(
        "Acknowledge: a false alarm",
        key="ev_ack_rejected",
        help="Acknowledge, and label every flagged reading of these events rejected.",
    ):
        todo = (event_actions.ACK, event_actions.REJECTED)
    if b4.button("Resolve", key="ev_resolve"):
        todo = (event_actions.RESOLVE, None)
    if todo is not None:
        action, verdict = todo
        try:
            readings = None
            if verdict is not None:
                readings = pd.concat([reads.event_readings(db, e) for e in chosen["event_id"]], ignore_index=True)
            msgs = event_actions.action_messages(list(chosen["event_id"]), action, who, note, verdict, readings)
            event_actions.send_actions(config, msgs)
        except ValueError as exc:
            st.error(str(exc))
        else:
            labelled = f" and {len(readings)} reading(s) labelled {verdict}" if readings is not None else ""
            st.success(
                f"{len(chosen)} event(s) {'acknowledged' if action == 'ack' else 'resolved'}{labelled}: "
                "the table shows it within a few seconds."
            )
            reads.events.clear()

# --- one event: its chart and what was sent about it ---------------------------------------------
if len(chosen) == 1:
    ev = chosen.iloc[0]
    pad = max(timedelta(seconds=30), (ev["end_ts"] - ev["start_ts"]) * 2)
    t0, t1 = ev["start_ts"] - pad, (ev["closed_at"] if pd.notna(ev["closed_at"]) else ev["end_ts"]) + pad
    line, marks = reads.chart_data(db, ev["sensor"], t0.to_pydatetime(), t1.to_pydatetime())
    span = pd.DataFrame(
        {"start": [ev["start_ts"]], "end": [ev["end_ts"]], "severity": [ev["severity"]], "event_id": [ev["event_id"]]}
    )
    st.markdown(
        f"**{ctx.book.label(ev['sensor'])}** from {clock.text(ev['start_ts'])} to "
        f"{clock.text(ev['end_ts'])[11:]} ({clock.name}): "
        f"{ev['n_flagged']} flagged, peak {ev['peak_value']} (score {ev['peak_score']:.3f}), "
        f"by {ev['detectors']}"
    )
    if not line.empty:
        st.altair_chart(
            charts.live_chart(
                line,
                marks,
                event_spans=span,
                clock=clock,
                unit=ctx.book.get(ev["sensor"]).unit,
                expected=ctx.book.expected(ev["sensor"]),
                detectors=ctx.detectors,
            ),
            width="stretch",
        )

if not chosen.empty:
    sent = delivery_states(outbox_path(config), list(chosen["event_id"]))
    st.subheader("Notifications")
    if not sent:
        st.caption("Nothing was sent about these events (no [alerts] channel, or below its minimum severity).")
    else:
        table = pd.DataFrame(
            sent,
            columns=[
                "event_id",
                "channel",
                "kind",
                "severity",
                "decided",
                "held",
                "state",
                "attempts",
                "last_error",
                "sent_at",
                "key",
            ],
        )
        table["state"] = table["state"].fillna(table["held"].map(lambda h: f"held ({h})" if h else "waiting"))
        for c in ("decided", "sent_at"):
            table[c] = clock.wall(pd.to_datetime(table[c], unit="s"))
        st.dataframe(table.drop(columns=["held"]), hide_index=True, key="deliveries_table")
