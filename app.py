"""Vigie's operator page: `streamlit run app.py` (or `make run`). The entry point: the password
gate, the navigation, the shared filters; each view is a file under views/ (lib/page/views.py says
how one is declared), queries are typed cached functions in lib/page/reads.py, charts in
lib/page/charts.py, comparisons in lib/detect/compare.py, CSV in lib/page/export.py.

The session, sensors, algorithms and time range chosen in the sidebar are shared by the views that
declare FILTERS = True; opening a session in Sessions sets them. The page never writes the
database: labels go to the store through the transport (lib/page/labels.py), and reads go through
the store (lib.store.reader.read_db).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from lib.config import PROJECT_ROOT, load_config
from lib.page import auth, reads, views
from lib.page.clock import Clock
from lib.page.queries import Filters
from lib.page.sensors import SensorBook

st.set_page_config(page_title="Vigie", layout="wide")
config = load_config()
DB = str(config.db_path)
clock = Clock.from_setting(config.app.timezone)
book = SensorBook(config.sensors)

# --- the optional password gate ----------------------------------------------------------------
if auth.gate_enabled(config.app.password) and not st.session_state.get("authenticated"):
    st.title("Vigie")
    with st.form("login_form", border=False):  # a form: Enter in the field logs in
        given = st.text_input("Password", type="password", key="password")
        submitted = st.form_submit_button("Enter", key="login")
    if submitted:
        ip = st.context.ip_address  # guesses slow down per client (lib.page.auth)
        client = ip if isinstance(ip, str) else "unknown"
        wait = auth.GUESSES.wait_s(client)
        if wait > 0:
            st.error(f"Too many wrong passwords: try again in {wait:.0f} s.")
        elif auth.check_password(config.app.password, given):
            auth.GUESSES.succeeded(client)
            st.session_state["authenticated"] = True
            st.session_state["auth_token"] = auth.new_token()
            st.rerun()
        else:
            auth.GUESSES.failed(client)
            st.error("Wrong password.")
    st.stop()
if auth.gate_enabled(config.app.password):
    # Sets the cookie that downloads need (page_server.py); invisible, loaded once per browser.
    st.html(
        f'<img src="{auth.LOGIN_PATH}{st.session_state["auth_token"]}" alt="" width="1" height="1" '
        'style="position:absolute;opacity:0">'
    )

# Streamlit's date field takes a typed date on Escape or when a click elsewhere closes its calendar,
# not on Enter; an operator who types a date and presses Enter expects it applied. This makes Enter
# in a date field do what Escape does there.
DATE_ENTER_APPLIES = """<script>
if (!window.vigieDateEnter) {
  window.vigieDateEnter = true;
  document.addEventListener("keydown", (event) => {
    const field = event.key === "Enter" && event.target.closest
      && event.target.closest('[data-testid="stDateInputField"]');
    if (field) {
      event.preventDefault();
      event.target.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape", bubbles: true}));
    }
  }, true);
}
</script>"""
st.sidebar.html(DATE_ENTER_APPLIES, unsafe_allow_javascript=True)

# --- navigation: one page per file under views/ ------------------------------------------------
VIEWS = views.find_views(PROJECT_ROOT / "views")
pages = {v.name: st.Page(str(v.path), title=v.title, url_path=v.name, default=i == 0) for i, v in enumerate(VIEWS)}
page = st.navigation(list(pages.values()))
view = next(v for v in VIEWS if pages[v.name] is page)

# The shared filters are drawn only above the views that use them; Streamlit forgets a widget's
# value on a run that does not draw it, so their values are carried over by hand.
SHARED_KEYS = ("session", "sensors", "detectors", "whole_range", "range_dates", "range_from", "range_to")
for key in SHARED_KEYS:
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]


@st.fragment(run_every=config.app.refresh_s)
def system_summary() -> None:
    """The system's state in one line on every view (the Health view has the details)."""
    problems = reads.system_health(str(config.data_dir), config).problems
    if problems:
        st.error(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""), icon="⚠️")
        st.page_link(pages["health"], label="Health")
    else:
        st.caption("System: running, boards connected, store writing.")


with st.sidebar:
    system_summary()

reads.start_run()
no_data = pd.DataFrame(columns=["session_id"])
if not Path(DB).exists():
    if view.needs_database:
        st.title(view.title)
        st.info(
            "No data yet: the store has not created the database. Is `make run` running? "
            "The Health view says what each program and board is doing."
        )
        st.stop()
    all_sessions, all_sensors, all_detectors = no_data, [], []
else:
    try:
        all_sessions = reads.sessions(DB)
        all_sensors = book.shown(reads.sensor_names(DB))  # the operator's order, hidden ones left out
        all_detectors = reads.detectors(DB)
    except duckdb.Error as exc:
        st.title(view.title)
        st.warning(f"The database cannot be read right now ({exc}). Reload the page in a moment.")
        st.stop()


class ReversedRange(ValueError):
    def __init__(self, start: datetime, end: datetime):
        super().__init__(
            f"The chosen time range ends ({end:%Y-%m-%d %H:%M}) before it starts "
            f"({start:%Y-%m-%d %H:%M}): pick an end after the start."
        )


def shared_filters() -> Filters:
    """The sidebar's session, sensors, algorithms and time range (picked on the operator's clock,
    kept in UTC)."""
    side = st.sidebar
    ids = list(all_sessions["session_id"]) if not all_sessions.empty else []
    session = side.selectbox(
        "Session", ["All sessions", *ids], key="session", help="Sessions view: select a row to open it here."
    )
    sessions = () if session == "All sessions" else (session,)
    sensors = side.multiselect("Sensors", all_sensors, key="sensors", placeholder="all sensors", format_func=book.label)
    dets = side.multiselect("Algorithms", all_detectors, key="detectors", placeholder="all algorithms")
    lo, hi = reads.time_bounds(DB, Filters(sessions=sessions, exclude=book.hidden))
    whole = side.toggle("Whole session" if sessions else "All time", value=True, key="whole_range")
    start = end = None
    if not whole and lo is not None:
        first, last = clock.wall(lo).date(), clock.wall(hi).date()
        d = side.date_input(f"Dates ({clock.name})", value=(first, last), key="range_dates")
        d0, d1 = (d[0], d[-1]) if isinstance(d, (tuple, list)) and d else (first, last)
        c0, c1 = side.columns(2)
        t0 = c0.time_input("From", value=time(0, 0), key="range_from", step=60, format="24h")
        t1 = c1.time_input("To", value=time(23, 59), key="range_to", step=60, format="24h")
        wall_start, wall_end = datetime.combine(d0, t0), datetime.combine(d1, t1)
        if wall_end < wall_start:
            side.error("The range ends before it starts.")
            raise ReversedRange(wall_start, wall_end)
        start = clock.to_utc(wall_start)
        end = clock.to_utc(wall_end) + timedelta(seconds=59, microseconds=999999)
    return Filters(
        sessions=sessions, sensors=tuple(sensors), detectors=tuple(dets), start=start, end=end, exclude=book.hidden
    )


try:
    open_events = reads.open_event_count(DB)
except duckdb.Error:
    open_events = None  # the title keeps its count until a run can read it
if open_events is not None:
    views.show_open_events(open_events)
try:
    filters = shared_filters() if view.filters else None
except ReversedRange as exc:
    st.title(view.title)
    st.error(str(exc))
    st.stop()
views.publish(
    views.Context(
        config=config,
        clock=clock,
        db=DB,
        sessions=all_sessions,
        sensors=all_sensors,
        detectors=all_detectors,
        filters=filters,
        pages=pages,
        book=book,
    )
)
page.run()
views.fill_as_of()
