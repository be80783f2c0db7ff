"""Live: each sensor over the chosen span, refreshed every `[app] refresh_s` seconds, with the
system's health above the charts."""

from datetime import timedelta

import duckdb
import streamlit as st

from lib.detect.detection import sensor_plan
from lib.page import charts, health, queries, reads, views
from lib.page.warmup import warmup

TITLE = "Live"
ORDER = 10

SPANS = {"5 min": 5, "15 min": 15, "1 h": 60, "6 h": 360, "24 h": 1440, "7 d": 10080, "30 d": 43200}

ctx = views.current()
config = ctx.config
st.title("Live")
c1, c2, c3 = st.columns([2, 4, 1])
span = c1.selectbox("Span", list(SPANS), index=0, key="span")
book = ctx.book
chosen = c2.multiselect("Sensors", ctx.sensors, key="live_sensors", placeholder="all sensors", format_func=book.label)
paused = c3.toggle("Pause", key="paused", help="Stop refreshing to look at a moment closely.")
# A stretch opened from the Overview: shown as it was, until the operator goes back to now.
focus = st.session_state.get("live_focus")
if focus:
    f1, f2 = st.columns([6, 1], vertical_alignment="center")
    f1.info(
        f"From the Overview: {', '.join(book.label(s) for s in chosen) or 'every sensor'} from "
        f"{ctx.clock.text(focus[0])} to {ctx.clock.text(focus[1])[11:]} ({ctx.clock.name})."
    )
    if f2.button("Back to now", key="live_unfocus"):
        del st.session_state["live_focus"]
        st.rerun()


@st.fragment(run_every=None if paused or focus else config.app.refresh_s)
def live() -> None:
    now = queries.utc_now().replace(microsecond=0)  # whole seconds: viewers share one read per second
    since = now - timedelta(minutes=SPANS[span])
    if focus:
        since, now = focus
    try:
        snap = reads.live_snapshot(ctx.db, tuple(chosen), since, now, tuple(book.shown(config.sensors)), book.hidden)
    except duckdb.Error as exc:  # the store held the file longer than the read's retries
        st.warning(f"The database is busy ({exc.__class__.__name__}); the next refresh retries.")
        return
    system = reads.system_health(str(config.data_dir), config)
    if system.problems:
        st.error("**Something is wrong with the system:**\n" + "\n".join(f"- {p}" for p in system.problems))
    totals, sensors = snap["totals"], snap["health"]
    cols = st.columns(5)
    cols[0].metric("Readings", f"{totals['readings']:,}")
    cols[1].metric("Readings/s (last min)", f"{sensors['per_s'].sum():.1f}" if not sensors.empty else "0")
    cols[2].metric("States", f"{totals['states']:,}")
    cols[3].metric("Rejects", f"{totals['rejects']:,}")
    cols[4].metric("Sessions", f"{totals['sessions']:,}")
    if sensors.empty:
        st.info("No readings yet: waiting for the board.")
        return
    sensors = health.with_ages(sensors, queries.utc_now())
    silent = sensors[health.stale(sensors)]
    if not silent.empty:
        st.warning(
            "Silent sensors: "
            + ", ".join(f"**{book.label(s)}** ({a:.0f} s)" for s, a in zip(silent["sensor"], silent["age_s"]))
        )
    st.page_link(ctx.pages["health"], label="Health: every program, board, sensor and detector")
    if len(snap["sensors"]) < snap["charted_of"]:
        st.caption(
            f"Charts for {len(snap['sensors'])} of {snap['charted_of']} sensors: choose sensors above to chart others."
        )
    try:
        open_spans = reads.open_event_spans(ctx.db, tuple(snap["sensors"]), since, now)
        views.show_open_events(reads.open_event_count(ctx.db))
    except duckdb.Error:
        open_spans = None  # the events are shown again on the next refresh
    for sensor, data in snap["sensors"].items():
        st.subheader(book.title(sensor))
        progress = data["progress"]
        for row in progress[progress["initializing"]].itertuples():
            needed = warmup(config, sensor, row.detector) or config.detection.window
            st.progress(min(1.0, row.seen / needed), text=f"{row.detector}: initialisation {row.seen}/{needed}")
        if data["line"].empty:
            st.caption(f"No reading in the last {span} (sensor silent).")
            continue
        spans = open_spans[open_spans["sensor"] == sensor] if open_spans is not None else None
        st.altair_chart(
            charts.live_chart(
                data["line"],
                data["marks"],
                data["init"],
                charts.rule_limits(config, sensor),
                event_spans=spans,
                clock=ctx.clock,
                breaks=data["breaks"],
                unit=book.get(sensor).unit,
                expected=book.expected(sensor),
                detectors=ctx.detectors,
                agree_among=tuple(d for d in sensor_plan(config, sensor) if d in ctx.detectors),
            ),
            width="stretch",
        )


live()
