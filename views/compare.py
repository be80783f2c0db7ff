"""Compare: what each algorithm flagged for the shared filters, how far they agree, how they score
against the truth, where they disagree; and a session replayed with other parameters."""

import json

import streamlit as st

from lib.detect import compare
from lib.page import charts, reads, views
from lib.page.runs import split_runs

TITLE = "Compare"
ORDER = 20
FILTERS = True

ctx = views.current()
f, db = ctx.filters, ctx.db


def replay_panel() -> None:
    from lib.detect import detectors
    from lib.detect.detection import sensor_plan

    st.subheader("Replay a session with other parameters")
    ids = list(ctx.sessions["session_id"])
    if not ids:
        st.caption("No stored session to replay.")
        return
    c1, c2, c3 = st.columns(3)
    session = c1.selectbox(
        "Session", ids, index=ids.index(f.sessions[0]) if f.sessions else 0, key=f"replay_session_{f.sessions}"
    )
    in_session = ctx.book.shown(reads.session_sensors(db, session))
    sensor = c2.selectbox(
        "Sensor",
        [s for s in in_session if not f.sensors or s in f.sensors] or in_session,
        key="replay_sensor",
        format_func=ctx.book.label,
    )
    ran_live = [d for d in ctx.detectors if d in detectors.REGISTRY]
    names = ran_live + sorted(set(detectors.REGISTRY) - set(ran_live))
    name = c3.selectbox(
        "Algorithm", names, key="replay_detector", help="Those that ran live come first; the others are replayed alone."
    )
    default = sensor_plan(ctx.config, sensor).get(name, {})
    text = st.text_input(
        "Parameters (JSON)",
        value=json.dumps(default),
        key=f"replay_params_{name}",
        help="The detector's constructor parameters, plus `threshold`.",
    )
    if not st.button("Replay", key="replay_run"):
        return
    try:
        params = json.loads(text or "{}")
        series = reads.session_series(db, session, sensor)
        if series.empty:
            st.info(f"{sensor} has no reading in {session}.")
            return
        with st.spinner(f"Replaying {len(series):,} readings through {name}..."):
            replayed = compare.replay(series["value"].tolist(), name, params)
    except (ValueError, TypeError) as exc:
        st.error(f"Cannot replay: {exc}")
        return
    live = reads.live_flags(db, session, sensor, name)
    result = compare.replay_vs_live(series, replayed, live)
    cols = st.columns(4)
    cols[0].metric("Flagged by the replay", result["replay_flagged"])
    cols[1].metric(f"Flagged live ({name})", result["live_flagged"] if not live.empty else "—")
    cols[2].metric("Jaccard", f"{result['jaccard']:.2f}" if not live.empty else "—")
    cols[3].metric("Cohen's kappa", f"{result['kappa']:.2f}" if not live.empty else "—")
    if live.empty:
        st.caption(f"{name} did not run live on this sensor: only the replay is shown.")
    rows, breaks = split_runs(
        result["rows"].assign(session_id=session), reads.gaps(db, series["ts"].min(), series["ts"].max(), (session,))
    )
    st.altair_chart(charts.replay_chart(rows, ctx.clock, breaks), width="stretch")


st.title("Compare algorithms")
views.as_of_bar(ctx.clock)
per = reads.per_detector(db, f)
if per.empty:
    st.info("No verdicts in this selection: pick another session, sensors or time range.")
    views.stop()
st.subheader("What each algorithm flagged")
st.dataframe(
    per,
    hide_index=True,
    key="per_detector_table",
    column_config={"share": st.column_config.NumberColumn("share of readings", format="percent")},
)
c1, c2 = st.columns([1, 1])
with c1:
    st.subheader("Agreement")
    measure = st.radio(
        "Measure",
        ["kappa", "jaccard"],
        horizontal=True,
        key="agreement_measure",
        help="Cohen's kappa: agreement beyond chance (1 perfect, 0 chance). Jaccard: both flagged / either flagged.",
    )
    matrix = compare.agreement_matrix(reads.pair_counts(db, f), measure)
    if matrix.empty:
        st.caption("Not enough verdicts to compare.")
    else:
        st.altair_chart(charts.agreement_heatmap(matrix, measure), width="stretch")
with c2:
    st.subheader("Against the truth")
    have = reads.truth_available(db, f)
    if not (have["injections"] or have["labels"]):
        st.caption(
            "No truth in this range: no simulator injections and no operator labels. "
            "Label readings in the Labels view to measure precision and recall."
        )
    else:
        st.caption(
            f"Truth: {have['injections']} simulator injections, {have['labels']} operator labels "
            "(a label overrides an injection)."
        )
        prf = compare.precision_recall_f1(reads.scores_vs_truth(db, f))
        st.dataframe(
            prf,
            hide_index=True,
            key="prf_table",
            column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in ("precision", "recall", "f1")},
        )
st.subheader("Where they disagree")
dis = reads.disagreements(db, f)
if dis.empty:
    st.caption("The algorithms agree on every reading of this selection.")
else:
    st.altair_chart(charts.disagreement_timeline(dis, ctx.clock), width="stretch")
    st.caption(
        f"{dis[['session_id', 'seq']].drop_duplicates().shape[0]:,} readings with split verdicts (first 5,000 shown)."
    )
replay_panel()
