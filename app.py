"""Vigie's operator page: `streamlit run app.py` (or `make run`). Layout only: the queries live
in lib/queries.py and the charts in lib/charts.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import streamlit as st

from lib import charts, queries
from lib.config import load_config
from lib.storage import read_db

st.set_page_config(page_title="Vigie", layout="wide")
config = load_config()
st.title("Vigie")

SPANS = {"5 min": 5, "15 min": 15, "1 h": 60, "6 h": 360, "24 h": 1440}
span = st.sidebar.selectbox("Span", list(SPANS), index=0, key="span")


@st.fragment(run_every=config.app.refresh_s)
def live() -> None:
    db = Path(config.db_path)
    if not db.exists():
        st.info("No data yet: the store has not created the database. Is `make run` running?")
        return
    since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=SPANS[span])
    with read_db(db) as conn:
        totals = queries.totals(conn)
        sensor_rows = queries.sensors(conn)
        data = {s: (queries.recent_readings(conn, s, since), queries.recent_states(conn, s, since))
                for s in sensor_rows["sensor"]}
    cols = st.columns(4)
    for col, (label, value) in zip(cols, totals.items()):
        col.metric(label.capitalize(), f"{value:,}")
    if sensor_rows.empty:
        st.info("No readings yet: waiting for the board.")
        return
    for sensor, (readings, states) in data.items():
        st.subheader(sensor)
        if readings.empty:
            st.caption("No reading in this span (sensor silent).")
            continue
        st.altair_chart(charts.live_chart(readings, states), use_container_width=True)


live()
