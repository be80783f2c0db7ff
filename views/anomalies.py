"""Anomalies: the flagged (reading, algorithm) pairs for the shared filters, and CSV downloads of
exactly those rows and of every reading."""

import streamlit as st

from lib.page import export, reads, views

TITLE = "Anomalies"
ORDER = 40
FILTERS = True

ctx = views.current()
f, db = ctx.filters, ctx.db
st.title("Anomalies")
views.as_of_bar(ctx.clock)
rows = reads.anomalies(db, f)
n_readings = reads.count_readings(db, f)
st.caption(f"{len(rows):,} flagged (reading, algorithm) pairs among {n_readings:,} readings for these filters.")
c1, c2 = st.columns(2)
c1.download_button(
    "Download CSV (anomalies)",
    export.to_csv(rows, ctx.clock),
    file_name="vigie-anomalies.csv",
    mime="text/csv",
    key="download_anomalies",
    disabled=rows.empty,
    on_click="ignore",
)
c2.download_button(
    "Download CSV (all readings)",
    lambda: export.to_csv(reads.readings(db, f), ctx.clock),
    file_name="vigie-readings.csv",
    mime="text/csv",
    key="download_readings",
    disabled=not n_readings,
    on_click="ignore",
)
if rows.empty:
    st.info("No anomalies in this range.")
    views.stop()
shown = ctx.clock.local_frame(rows).assign(sensor=rows["sensor"].map(ctx.book.label))
st.dataframe(
    shown,
    hide_index=True,
    key="anomalies_table",
    column_config={
        "ts": st.column_config.DatetimeColumn(f"time ({ctx.clock.name})", format="YYYY-MM-DD HH:mm:ss.SSS"),
        "score": st.column_config.NumberColumn(format="%.3f"),
    },
)
