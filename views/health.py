"""Health: what is wrong with the system, not with the data. Each program's state under
supervisord, each board, the transport's backlog, the store's last write, each sensor's last
reading and each detector's delay; refreshed every `[app] refresh_s` seconds."""

from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from lib.page import health, queries, reads, views

TITLE = "Health"
ORDER = 60
NEEDS_DATABASE = False

ctx = views.current()
clock = ctx.clock
st.title("Health")
paused = st.toggle("Pause", key="health_paused", help="Stop refreshing.")


def shown(unix: float | None) -> str:
    if not unix:
        return "—"
    return clock.text(datetime.fromtimestamp(unix, timezone.utc).replace(tzinfo=None))


@st.fragment(run_every=None if paused else ctx.config.app.refresh_s)
def panel() -> None:
    h = reads.system_health(str(ctx.config.data_dir), ctx.config)
    st.caption(f"As of {shown(h.now)} ({clock.name}).")
    if h.problems:
        st.error("\n".join(f"- {p}" for p in h.problems))
    else:
        st.success("Every program runs, every board is connected, the store is writing.")

    st.subheader("Programs")
    if h.programs is None:
        st.caption(
            f"supervisord does not answer on {ctx.config.data_dir / 'supervisor.sock'} ({h.supervisor_error}): "
            "is the page running without `make run`?"
        )
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "program": p.name,
                        "state": health.PROGRAM_WORDS.get(p.state, p.state),
                        "supervisord": p.state,
                        "detail": p.description,
                    }
                    for p in h.programs
                ]
            ),
            hide_index=True,
            key="programs_table",
        )

    st.subheader("Boards")
    if not h.boards:
        st.caption("No producer has reported yet.")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "board": s.name,
                        "port": s.port,
                        "state": s.state if s.alive else f"{s.state} (producer not running)",
                        "since": shown(s.since),
                        "lines read": s.lines_read,
                        "last line": shown(s.last_line_at),
                        "held in memory": s.buffered_lines,
                        "detail": s.detail,
                    }
                    for s in h.boards
                ]
            ),
            hide_index=True,
            key="boards_table",
        )

    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Transport")
        if h.backlog is None:
            st.caption(
                f"Backlog not measured ({h.backlog_error})."
                if h.backlog_error
                else f"The {ctx.config.transport.kind} transport does not report its backlog here."
            )
        elif not h.backlog:
            st.caption("No consumer group has joined the transport yet.")
        else:
            st.dataframe(
                pd.DataFrame(
                    {"consumer group": list(h.backlog), f"{h.backlog_unit} waiting": list(h.backlog.values())}
                ),
                hide_index=True,
                key="backlog_table",
            )
    with c2:
        st.subheader("Store")
        if h.store_last_write is None:
            st.caption("No write recorded yet.")
        else:
            st.metric(
                "Last write",
                f"{max(0.0, h.now - h.store_last_write):.1f} s ago",
                help=f"at {shown(h.store_last_write)}",
            )

    st.subheader("Sensors and detectors")
    if not Path(ctx.db).exists():
        st.caption("No database yet: the store creates it at its start.")
        return
    now = queries.utc_now()
    try:
        sensors, lag = reads.sensor_health(ctx.db, now.replace(microsecond=0))
    except duckdb.Error as exc:
        st.warning(f"The database is busy ({exc.__class__.__name__}); the next refresh retries.")
        return
    if sensors.empty:
        st.caption("No reading in the last 24 hours.")
        return
    sensors = sensors[~sensors["sensor"].isin(ctx.book.hidden)]
    order = ctx.book.shown(sensors["sensor"])
    sensors = (
        sensors.set_index("sensor").loc[order].reset_index().assign(label=lambda d: d["sensor"].map(ctx.book.label))
    )
    sensors = health.with_ages(sensors, now)
    sensors = clock.local_frame(sensors.assign(silent=health.stale(sensors)), ("last_ts",))
    st.dataframe(
        sensors[["label", "sensor", "last_ts", "age_s", "per_s", "silent"]],
        hide_index=True,
        key="health_table",
        column_config={
            "label": "sensor",
            "sensor": "sends as",
            "last_ts": st.column_config.DatetimeColumn(f"last reading ({clock.name})", format="YYYY-MM-DD HH:mm:ss"),
            "age_s": st.column_config.NumberColumn("age (s)", format="%.1f"),
            "per_s": st.column_config.NumberColumn("readings/s", format="%.2f"),
        },
    )
    ahead = sensors[sensors["ahead_s"] > 1.0]
    if not ahead.empty:
        st.caption(
            "Readings stamped ahead of this machine's clock (another machine's clock?): "
            + ", ".join(f"{s} by {a:.1f} s" for s, a in zip(ahead["sensor"], ahead["ahead_s"]))
        )
    if not lag.empty:
        lag = clock.local_frame(lag, ("last_verdict",))
        st.dataframe(
            lag.assign(status=["ok" if b is not None and b < 5 else "behind" for b in lag["behind_s"]]),
            hide_index=True,
            key="lag_table",
            column_config={
                "behind_s": st.column_config.NumberColumn("behind newest reading (s)", format="%.1f"),
                "last_verdict": st.column_config.DatetimeColumn(
                    f"last verdict ({clock.name})", format="YYYY-MM-DD HH:mm:ss"
                ),
            },
        )


panel()
