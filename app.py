"""Vigie's operator page: `streamlit run app.py` (or `make run`). Layout only: the queries live
in lib/page/queries.py, the charts in lib/page/charts.py, comparisons in lib/detect/compare.py, CSV in lib/page/export.py.

Five views (sidebar): Live, Compare, Sessions, Anomalies, Labels. The session, sensors,
algorithms and time range chosen in the sidebar are shared by Compare, Anomalies and Labels;
opening a session in Sessions sets them. The page never writes the database: labels go to the
store through the transport (lib/page/labels.py), and reads go through the store (lib.store.storage.read_db).
"""
from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from lib.page import auth, charts, export, queries

from lib.detect import compare
from lib.config import load_config
from lib.page.queries import Filters
from lib.store.storage import read_db

st.set_page_config(page_title="Vigie", layout="wide")
config = load_config()
DB = Path(config.db_path)

# --- the optional password gate ----------------------------------------------------------------
if auth.gate_enabled(config.app.password) and not st.session_state.get("authenticated"):
    st.title("Vigie")
    given = st.text_input("Password", type="password", key="password")
    if st.button("Enter", key="login"):
        if auth.check_password(config.app.password, given):
            st.session_state["authenticated"] = True
            st.rerun()
        st.error("Wrong password.")
    st.stop()


@st.cache_data(ttl=1.0, max_entries=64, show_spinner=False)
def live_snapshot(db: str, sensors: tuple[str, ...], since: datetime, now: datetime) -> dict:
    """Everything one refresh of the Live view draws, read through one short connection
    (cached for a second, so reruns share it)."""
    with read_db(db) as conn:
        raw = queries.live_fetch(conn, sensors, since, now)
    return queries.live_shape(raw)


@st.cache_data(ttl=10.0, max_entries=256, show_spinner=False)
def query(db: str, name: str, *args):
    with read_db(db) as conn:
        return getattr(queries, name)(conn, *args)


def fmt_ts(ts) -> str:
    return "—" if ts is None or pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


VIEWS = ["Live", "Compare", "Sessions", "Anomalies", "Labels"]
st.sidebar.title("Vigie")
view = st.sidebar.radio("View", VIEWS, key="view")

if not DB.exists():
    st.title(view)
    st.info("No data yet: the store has not created the database. Is `make run` running?")
    st.stop()

# --- shared filters (Compare, Anomalies, Labels) -----------------------------------------------
try:
    all_sessions = query(str(DB), "sessions")
    all_sensors = query(str(DB), "sensor_names")
    all_detectors = query(str(DB), "detectors")
except duckdb.Error as exc:
    st.title(view)
    st.warning(f"The database cannot be read right now ({exc}). Reload the page in a moment.")
    st.stop()


def shared_filters() -> Filters:
    """The sidebar's session, sensors, algorithms and time range."""
    side = st.sidebar
    side.divider()
    ids = list(all_sessions["session_id"]) if not all_sessions.empty else []
    session = side.selectbox("Session", ["All sessions", *ids], key="session",
                             help="Sessions view: select a row to open it here.")
    sessions = () if session == "All sessions" else (session,)
    sensors = side.multiselect("Sensors", all_sensors, key="sensors", placeholder="all sensors")
    dets = side.multiselect("Algorithms", all_detectors, key="detectors", placeholder="all algorithms")
    lo, hi = query(str(DB), "time_bounds", Filters(sessions=sessions))
    whole = side.toggle("Whole session" if sessions else "All time", value=True, key="whole_range")
    start = end = None
    if not whole and lo is not None:
        d = side.date_input("Dates (UTC)", value=(lo.date(), hi.date()), key="range_dates")
        d0, d1 = (d[0], d[-1]) if isinstance(d, (tuple, list)) and d else (lo.date(), hi.date())
        c0, c1 = side.columns(2)
        t0 = c0.time_input("From", value=time(0, 0), key="range_from", step=60)
        t1 = c1.time_input("To", value=time(23, 59), key="range_to", step=60)
        start, end = datetime.combine(d0, t0), datetime.combine(d1, t1).replace(second=59, microsecond=999999)
    return Filters(sessions=sessions, sensors=tuple(sensors), detectors=tuple(dets), start=start, end=end)


# --- Live --------------------------------------------------------------------------------------
SPANS = {"5 min": 5, "15 min": 15, "1 h": 60, "6 h": 360, "24 h": 1440}


def live_view() -> None:
    st.title("Live")
    c1, c2, c3 = st.columns([2, 4, 1])
    span = c1.selectbox("Span", list(SPANS), index=0, key="span")
    chosen = c2.multiselect("Sensors", all_sensors, key="live_sensors", placeholder="all sensors")
    paused = c3.toggle("Pause", key="paused", help="Stop refreshing to look at a moment closely.")

    @st.fragment(run_every=None if paused else config.app.refresh_s)
    def live() -> None:
        now = queries.utc_now().replace(microsecond=0)  # whole seconds: viewers share one read per second
        since = now - timedelta(minutes=SPANS[span])
        try:
            snap = live_snapshot(str(DB), tuple(chosen), since, now)
        except duckdb.Error as exc:  # the store held the file longer than the read's retries
            st.warning(f"The database is busy ({exc.__class__.__name__}); the next refresh retries.")
            return
        totals, health, lag = snap["totals"], snap["health"], snap["lag"]
        cols = st.columns(5)
        cols[0].metric("Readings", f"{totals['readings']:,}")
        cols[1].metric("Readings/s (last min)", f"{health['per_s'].sum():.1f}" if not health.empty else "0")
        cols[2].metric("States", f"{totals['states']:,}")
        cols[3].metric("Rejects", f"{totals['rejects']:,}")
        cols[4].metric("Sessions", f"{totals['sessions']:,}")
        if health.empty:
            st.info("No readings yet: waiting for the board.")
            return
        # stale: silent for 10 s, or for 5 of its usual intervals if it is a slow sensor
        limit = (5.0 / health["per_s"].where(health["per_s"] > 0)).fillna(10.0).clip(lower=10.0)
        h = health.assign(stale=health["age_s"] > limit)
        with st.expander("Health: sensors and workers", expanded=False):
            st.dataframe(h.style.apply(lambda r: ["color: #d62728; font-weight: bold" if r["stale"] else ""] * len(r),
                                       axis=1), hide_index=True, key="health_table",
                         column_config={"last_ts": st.column_config.DatetimeColumn("last reading (UTC)"),
                                        "age_s": st.column_config.NumberColumn("age (s)", format="%.1f"),
                                        "per_s": st.column_config.NumberColumn("readings/s", format="%.2f")})
            if not lag.empty:
                st.dataframe(lag.assign(status=["ok" if b is not None and b < 5 else "behind" for b in lag["behind_s"]]),
                             hide_index=True, key="lag_table",
                             column_config={"behind_s": st.column_config.NumberColumn("behind newest reading (s)",
                                                                                      format="%.1f")})
        stale = h[h["stale"]]
        if not stale.empty:
            st.warning("Silent sensors: " + ", ".join(f"**{s}** ({a:.0f} s)" for s, a in
                                                       zip(stale["sensor"], stale["age_s"])))
        if len(snap["sensors"]) < snap["charted_of"]:
            st.caption(f"Charts for {len(snap['sensors'])} of {snap['charted_of']} sensors: choose sensors above "
                       "to chart others.")
        for sensor, data in snap["sensors"].items():
            st.subheader(sensor)
            progress = data["progress"]
            for row in progress[progress["initializing"]].itertuples():
                st.progress(min(1.0, row.seen / config.detection.window),
                            text=f"{row.detector}: initialisation {row.seen}/{config.detection.window}")
            if data["line"].empty:
                st.caption(f"No reading in the last {span} (sensor silent).")
                continue
            st.altair_chart(charts.live_chart(data["line"], data["marks"], data["init"],
                                              charts.rule_limits(config, sensor)), width="stretch")

    live()


# --- Compare -----------------------------------------------------------------------------------
def compare_view(f: Filters) -> None:
    st.title("Compare algorithms")
    db = str(DB)
    per = query(db, "per_detector", f)
    if per.empty:
        st.info("No verdicts in this selection: pick another session, sensors or time range.")
        return
    st.subheader("What each algorithm flagged")
    st.dataframe(per, hide_index=True, key="per_detector_table",
                 column_config={"share": st.column_config.NumberColumn("share of readings", format="percent")})
    c1, c2 = st.columns([1, 1])
    with c1:
        st.subheader("Agreement")
        measure = st.radio("Measure", ["kappa", "jaccard"], horizontal=True, key="agreement_measure",
                           help="Cohen's kappa: agreement beyond chance (1 perfect, 0 chance). "
                                "Jaccard: both flagged / either flagged.")
        matrix = compare.agreement_matrix(query(db, "pair_counts", f), measure)
        if matrix.empty:
            st.caption("Not enough verdicts to compare.")
        else:
            st.altair_chart(charts.agreement_heatmap(matrix, measure), width="stretch")
    with c2:
        st.subheader("Against the truth")
        have = query(db, "truth_available", f)
        if not (have["injections"] or have["labels"]):
            st.caption("No truth in this range: no simulator injections and no operator labels. "
                       "Label readings in the Labels view to measure precision and recall.")
        else:
            st.caption(f"Truth: {have['injections']} simulator injections, {have['labels']} operator labels "
                       "(a label overrides an injection).")
            prf = compare.precision_recall_f1(query(db, "scores_vs_truth", f))
            st.dataframe(prf, hide_index=True, key="prf_table",
                         column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                        for c in ("precision", "recall", "f1")})
    st.subheader("Where they disagree")
    dis = query(db, "disagreements", f)
    if dis.empty:
        st.caption("The algorithms agree on every reading of this selection.")
    else:
        st.altair_chart(charts.disagreement_timeline(dis), width="stretch")
        st.caption(f"{dis[['session_id', 'seq']].drop_duplicates().shape[0]:,} readings with split verdicts "
                   "(first 5,000 shown).")
    replay_panel(f)


def replay_panel(f: Filters) -> None:
    from lib.detect import detectors
    from lib.detect.detection import sensor_plan
    st.subheader("Replay a session with other parameters")
    ids = list(all_sessions["session_id"])
    if not ids:
        st.caption("No stored session to replay.")
        return
    c1, c2, c3 = st.columns(3)
    session = c1.selectbox("Session", ids, index=ids.index(f.sessions[0]) if f.sessions else 0,
                           key=f"replay_session_{f.sessions}")
    in_session = query(str(DB), "session_sensors", session)
    sensor = c2.selectbox("Sensor", [s for s in in_session if not f.sensors or s in f.sensors] or in_session,
                          key="replay_sensor")
    ran_live = [d for d in all_detectors if d in detectors.REGISTRY]
    names = ran_live + sorted(set(detectors.REGISTRY) - set(ran_live))
    name = c3.selectbox("Algorithm", names, key="replay_detector",
                        help="Those that ran live come first; the others are replayed alone.")
    default = sensor_plan(config, sensor).get(name, {})
    text = st.text_input("Parameters (JSON)", value=json.dumps(default), key=f"replay_params_{name}",
                         help="The detector's constructor parameters, plus `threshold`.")
    if not st.button("Replay", key="replay_run"):
        return
    try:
        params = json.loads(text or "{}")
        series = query(str(DB), "session_series", session, sensor)
        if series.empty:
            st.info(f"{sensor} has no reading in {session}.")
            return
        with st.spinner(f"Replaying {len(series):,} readings through {name}..."):
            replayed = compare.replay(series["value"].tolist(), name, params)
    except (ValueError, TypeError) as exc:
        st.error(f"Cannot replay: {exc}")
        return
    live = query(str(DB), "live_flags", session, sensor, name)
    result = compare.replay_vs_live(series, replayed, live)
    cols = st.columns(4)
    cols[0].metric("Flagged by the replay", result["replay_flagged"])
    cols[1].metric(f"Flagged live ({name})", result["live_flagged"] if not live.empty else "—")
    cols[2].metric("Jaccard", f"{result['jaccard']:.2f}" if not live.empty else "—")
    cols[3].metric("Cohen's kappa", f"{result['kappa']:.2f}" if not live.empty else "—")
    if live.empty:
        st.caption(f"{name} did not run live on this sensor: only the replay is shown.")
    st.altair_chart(charts.replay_chart(result["rows"]), width="stretch")


# --- Sessions ----------------------------------------------------------------------------------
def open_session(ids: list[str]) -> None:
    rows = st.session_state["sessions_table"].selection.rows
    if rows:
        st.session_state["session"] = ids[rows[0]]
        st.session_state["whole_range"] = True


def sessions_view() -> None:
    st.title("Sessions")
    lo, hi = query(str(DB), "time_bounds", Filters())
    today = queries.utc_now().date()
    default = ((lo or queries.utc_now()).date(), today)
    picked = st.date_input("Sessions between (UTC dates)", value=default, key="sessions_dates")
    d0, d1 = (picked[0], picked[-1]) if isinstance(picked, (tuple, list)) and picked else default
    start, end = datetime.combine(d0, time.min), datetime.combine(d1, time.max)
    found = query(str(DB), "sessions", start, end)
    if found.empty:
        st.info(f"No session between {d0} and {d1}." if not all_sessions.empty else "No session yet.")
        return
    st.caption(f"{len(found)} session(s) between {d0} and {d1}. Select one to open it in Compare, "
               "Anomalies and Labels.")
    ids = list(found["session_id"])
    per_algo = [c for c in found.columns if c.startswith("anomalies ")]
    found = found.assign(flagged=[" · ".join(f"{c.removeprefix('anomalies ')} {row[c]}" for c in per_algo)
                                  for _, row in found.iterrows()])
    st.dataframe(found, hide_index=True, key="sessions_table", on_select=lambda: open_session(ids),
                 selection_mode="single-row",
                 column_order=["session_id", "port", "started_at", "duration_s", "readings", "rejects", "gaps",
                               "flagged"],
                 column_config={"session_id": st.column_config.TextColumn("session"),
                                "started_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm"),
                                "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
                                "flagged": st.column_config.TextColumn("anomalies per algorithm", width="large")})
    if st.session_state.get("session") in ids:
        st.success(f"Open: **{st.session_state['session']}** (sidebar filters).")


# --- Anomalies ---------------------------------------------------------------------------------
def anomalies_view(f: Filters) -> None:
    st.title("Anomalies")
    db = str(DB)
    rows = query(db, "anomalies", f)
    n_readings = query(db, "count_readings", f)
    st.caption(f"{len(rows):,} flagged (reading, algorithm) pairs among {n_readings:,} readings for these filters.")
    c1, c2 = st.columns(2)
    c1.download_button("Download CSV (anomalies)", export.to_csv(rows), file_name="vigie-anomalies.csv",
                       mime="text/csv", key="download_anomalies", disabled=rows.empty, on_click="ignore")
    c2.download_button("Download CSV (all readings)",
                       lambda: export.to_csv(query(db, "readings", f)), file_name="vigie-readings.csv",
                       mime="text/csv", key="download_readings", disabled=not n_readings, on_click="ignore")
    if rows.empty:
        st.info("No anomalies in this range.")
        return
    st.dataframe(rows, hide_index=True, key="anomalies_table",
                 column_config={"ts": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS"),
                                "score": st.column_config.NumberColumn(format="%.3f")})


# --- Labels ------------------------------------------------------------------------------------
def send(label) -> None:
    from lib.page.labels import send_labels
    send_labels(config, [label])
    st.session_state.setdefault("sent_labels", []).append(label)


def labels_view(f: Filters) -> None:
    from lib.page.labels import CONFIRMED, MISSED, REJECTED, Label
    st.title("Labels")
    st.caption("Confirm or reject what an algorithm flagged, or mark an anomaly none flagged. Labels go to "
               "the store and count as truth in Compare's precision and recall.")
    db = str(DB)
    flagged = query(db, "anomalies", f, 2000)
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("A flagged reading")
        if flagged.empty:
            st.caption("No flagged reading for these filters.")
        else:
            by_reading = flagged.groupby(["session_id", "seq"], sort=False).agg(
                ts=("ts", "first"), sensor=("sensor", "first"), value=("value", "first"),
                detectors=("detector", lambda d: ", ".join(sorted(d)))).reset_index()
            options = list(range(len(by_reading)))
            pick = st.selectbox("Reading", options, key="label_pick", format_func=lambda i: (
                f"{fmt_ts(by_reading.ts[i])}  {by_reading.sensor[i]} = {by_reading.value[i]:g}"
                f"  ({by_reading.detectors[i]})"))
            note = st.text_input("Note (optional)", key="label_note")
            r = by_reading.iloc[pick]
            b1, b2 = st.columns(2)
            for verdict, col, label in ((CONFIRMED, b1, "Confirm: a real anomaly"), (REJECTED, b2, "Reject: a false alarm")):
                if col.button(label, key=f"label_{verdict}"):
                    send(Label(r.session_id, int(r.seq), r.sensor, r.ts.to_pydatetime(), verdict,
                               r.detectors, note or None))
                    st.success(f"{verdict}: {r.sensor} at {fmt_ts(r.ts)}. Sent to the store.")
    with c2:
        st.subheader("A missed anomaly")
        sensor = st.selectbox("Sensor", all_sensors, key="missed_sensor")
        default = fmt_ts(flagged.ts.iloc[0]) if not flagged.empty else fmt_ts(queries.utc_now())
        when = st.text_input("Time (UTC, YYYY-MM-DD HH:MM:SS)", value=default, key="missed_time")
        try:
            at = datetime.fromisoformat(when.strip())
        except ValueError:
            st.error("Write the time as YYYY-MM-DD HH:MM:SS.")
            at = None
        if at is not None:
            near = query(db, "readings", Filters(sessions=f.sessions, sensors=(sensor,),
                                                 start=at - timedelta(seconds=30), end=at + timedelta(seconds=30)))
            if near.empty:
                st.caption("No reading of this sensor within 30 s of that time.")
            else:
                near = near.iloc[(near["ts"] - at).abs().argsort()[:1]].iloc[0]
                st.caption(f"Nearest reading: {fmt_ts(near.ts)}, value {near.value:g} (session {near.session_id}).")
                if st.button("Mark as a missed anomaly", key="label_missed"):
                    send(Label(near.session_id, int(near.seq), sensor, near.ts.to_pydatetime(), MISSED))
                    st.success("Missed anomaly marked. Sent to the store.")
    st.subheader("Stored labels")
    stored = query(db, "labels", Filters(sessions=f.sessions, sensors=f.sensors))
    pending = len(st.session_state.get("sent_labels", []))
    if stored.empty:
        st.caption("No label stored yet." + (f" {pending} sent, on their way to the store." if pending else ""))
    else:
        st.dataframe(stored, hide_index=True, key="labels_table")


# --- layout --------------------------------------------------------------------------------------
if view == "Live":
    live_view()
else:
    filters = shared_filters()
    if view == "Compare":
        compare_view(filters)
    elif view == "Sessions":
        sessions_view()
    elif view == "Anomalies":
        anomalies_view(filters)
    else:
        labels_view(filters)
