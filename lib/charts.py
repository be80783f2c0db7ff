"""Altair charts for the app: readings as a line, one marker layer per algorithm."""
from __future__ import annotations

import altair as alt
import pandas as pd

INITIALIZING_COLOUR = "#9e9e9e"


def live_chart(readings: pd.DataFrame, states: pd.DataFrame) -> alt.LayerChart:
    """Value over time, with a marker on each reading an algorithm flagged (colour per algorithm)
    and initializing readings as grey ticks."""
    base = alt.Chart(readings).mark_line(color="#1f77b4").encode(
        x=alt.X("ts:T", title="time (UTC)"), y=alt.Y("value:Q", title="value", scale=alt.Scale(zero=False)),
        tooltip=["ts:T", "value:Q", "seq:Q"])
    layers = [base]
    anomalies = states[states["state"] == "anomaly"]
    if not anomalies.empty:
        layers.append(alt.Chart(anomalies).mark_point(filled=True, size=70).encode(
            x="ts:T", y="value:Q",
            color=alt.Color("detector:N", title="flagged by"),
            shape=alt.Shape("detector:N", title="flagged by"),
            tooltip=["ts:T", "value:Q", "detector:N", alt.Tooltip("score:Q", format=".3f")]))
    init = states[states["state"] == "initializing"].drop_duplicates("ts")
    if not init.empty:
        layers.append(alt.Chart(init).mark_tick(color=INITIALIZING_COLOUR, thickness=2).encode(
            x="ts:T", y="value:Q", tooltip=["ts:T", "value:Q", alt.Tooltip("state:N")]))
    return alt.layer(*layers).properties(height=260)
