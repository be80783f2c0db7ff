"""Labels: confirm or reject what an algorithm flagged, or mark an anomaly none flagged; the labels
travel to the store and count as truth in Compare."""

from datetime import datetime, timedelta

import streamlit as st

from lib.page import reads, views
from lib.page.labels import CONFIRMED, MISSED, REJECTED, Label, send_labels
from lib.page.queries import Filters

TITLE = "Labels"
ORDER = 50
FILTERS = True

ctx = views.current()
f, db, clock = ctx.filters, ctx.db, ctx.clock
fmt_ts = clock.text


def send(label: Label) -> None:
    send_labels(ctx.config, [label])
    st.session_state.setdefault("sent_labels", []).append(label)


st.title("Labels")
views.as_of_bar(ctx.clock)
st.caption(
    "Confirm or reject what an algorithm flagged, or mark an anomaly none flagged. Labels go to "
    "the store and count as truth in Compare's precision and recall."
)
flagged = reads.anomalies(db, f, 2000)
c1, c2 = st.columns(2)
with c1:
    st.subheader("A flagged reading")
    if flagged.empty:
        st.caption("No flagged reading for these filters.")
    else:
        by_reading = (
            flagged.groupby(["session_id", "seq"], sort=False)
            .agg(
                ts=("ts", "first"),
                sensor=("sensor", "first"),
                value=("value", "first"),
                detectors=("detector", lambda d: ", ".join(sorted(d))),
            )
            .reset_index()
        )
        options = list(range(len(by_reading)))
        pick = st.selectbox(
            "Reading",
            options,
            key="label_pick",
            format_func=lambda i: (
                f"{fmt_ts(by_reading.ts[i])}  {ctx.book.label(by_reading.sensor[i])} = {by_reading.value[i]:g}"
                f"  ({by_reading.detectors[i]})"
            ),
        )
        note = st.text_input("Note (optional)", key="label_note")
        r = by_reading.iloc[pick]
        b1, b2 = st.columns(2)
        for verdict, col, label in (
            (CONFIRMED, b1, "Confirm: a real anomaly"),
            (REJECTED, b2, "Reject: a false alarm"),
        ):
            if col.button(label, key=f"label_{verdict}"):
                send(
                    Label(r.session_id, int(r.seq), r.sensor, r.ts.to_pydatetime(), verdict, r.detectors, note or None)
                )
                st.success(f"{verdict}: {r.sensor} at {fmt_ts(r.ts)}. Sent to the store.")
with c2:
    st.subheader("A missed anomaly")
    sensor = st.selectbox("Sensor", ctx.sensors, key="missed_sensor", format_func=ctx.book.label)
    default = fmt_ts(flagged.ts.iloc[0]) if not flagged.empty else clock.now().strftime("%Y-%m-%d %H:%M:%S")
    when = st.text_input(f"Time ({clock.name}, YYYY-MM-DD HH:MM:SS)", value=default, key="missed_time")
    try:
        at = clock.to_utc(datetime.fromisoformat(when.strip()))
    except ValueError:
        st.error("Write the time as YYYY-MM-DD HH:MM:SS.")
        at = None
    if at is not None:
        near = reads.readings(
            db,
            Filters(
                sessions=f.sessions, sensors=(sensor,), start=at - timedelta(seconds=30), end=at + timedelta(seconds=30)
            ),
        )
        if near.empty:
            st.caption("No reading of this sensor within 30 s of that time.")
        else:
            near = near.iloc[(near["ts"] - at).abs().argsort()[:1]].iloc[0]
            st.caption(f"Nearest reading: {fmt_ts(near.ts)}, value {near.value:g} (session {near.session_id}).")
            if st.button("Mark as a missed anomaly", key="label_missed"):
                send(Label(near.session_id, int(near.seq), sensor, near.ts.to_pydatetime(), MISSED))
                st.success("Missed anomaly marked. Sent to the store.")
st.subheader("Stored labels")
stored = reads.labels(db, Filters(sessions=f.sessions, sensors=f.sensors))
pending = len(st.session_state.get("sent_labels", []))
if stored.empty:
    st.caption("No label stored yet." + (f" {pending} sent, on their way to the store." if pending else ""))
else:
    st.dataframe(
        clock.local_frame(stored, ("ts", "made_at")),
        hide_index=True,
        key="labels_table",
        column_config={
            "ts": st.column_config.DatetimeColumn(f"time ({clock.name})", format="YYYY-MM-DD HH:mm:ss.SSS"),
            "made_at": st.column_config.DatetimeColumn(f"labelled ({clock.name})", format="YYYY-MM-DD HH:mm:ss"),
        },
    )
