"""Overview: a strip per sensor over the chosen span, a cell per stretch of time, red where
readings were flagged; a click on a cell opens Live on that sensor at that time."""

import math
from datetime import timedelta

import duckdb
import streamlit as st

from lib.page import charts, queries, reads, views

TITLE = "Overview"
ORDER = 12

SPANS = {"1 h": 60, "6 h": 360, "24 h": 1440, "7 d": 10080, "30 d": 43200}
BINS = 120  # cells per strip

ctx = views.current()
book, clock = ctx.book, ctx.clock
st.title("Overview")
c1, c2 = st.columns([2, 5])
span = c1.selectbox("Span", list(SPANS), index=2, key="overview_span")
c2.caption(
    "Each row is a sensor, each cell a stretch of time: light green, readings and no anomaly; red, "
    "readings flagged (darker: more); blank, nothing stored. Click a cell to open it in Live."
)
# whole minutes (the store's rollups), aligned so that the cells stay put from one refresh to the next
bin_s = max(60, math.ceil(SPANS[span] * 60 / BINS / 60) * 60)


# A click asks for Live from inside the refreshing fragment; the page switch itself happens on the
# full rerun that follows, outside it (switched from inside the fragment, Live sometimes came up
# blank: the fragment's next timed run redrew an empty main area).
if st.session_state.pop("overview_open_live", False):
    st.switch_page(ctx.pages["live"])


def open_in_live(sensor: str, start) -> None:
    st.session_state["live_sensors"] = [sensor]
    st.session_state["live_focus"] = (start - timedelta(seconds=bin_s), start + timedelta(seconds=2 * bin_s))
    st.session_state["overview_open_live"] = True
    st.rerun()


@st.fragment(run_every=max(10.0, ctx.config.app.refresh_s))
def strips() -> None:
    now = queries.utc_now()
    width = timedelta(seconds=bin_s)
    last = now - (now - now.replace(hour=0, minute=0, second=0, microsecond=0)) % width
    start = last - width * (BINS - 1)
    try:
        cells = reads.anomaly_strips(ctx.db, start, bin_s, BINS, book.hidden)
    except duckdb.Error as exc:
        st.warning(f"The database is busy ({exc.__class__.__name__}); the next refresh retries.")
        return
    cells = cells[cells["sensor"].isin(ctx.sensors)]
    if cells.empty:
        st.info(f"No reading stored in the last {span}.")
        return
    order = book.shown(cells["sensor"].unique())
    cells = cells.assign(
        start=start + cells["bin"].map(lambda b: width * int(b)),
        cell=range(len(cells)),
        name=cells["sensor"],
        sensor=cells["sensor"].map(book.label),
    )
    flagged = cells.groupby("name")["flagged"].sum()
    st.caption(
        f"{int((flagged > 0).sum())} of {len(order)} sensors had flagged readings in the last {span} "
        f"({int(flagged.sum()):,} readings flagged); cells of {bin_s // 60} min, as of "
        f"{clock.text(now)} ({clock.name})."
    )
    event = st.altair_chart(
        charts.overview_strips(cells, clock, [book.label(s) for s in order], bin_s),
        width="stretch",
        key="overview_chart",
        on_select="rerun",
        selection_mode="cell",
    )
    picked = (event or {}).get("selection", {}).get("cell") or []
    if picked:
        row = cells[cells["cell"] == picked[0]["cell"]].iloc[0]
        open_in_live(row["name"], row["start"].to_pydatetime())


strips()
