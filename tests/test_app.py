"""The operator page (Streamlit's AppTest) on a real, prepared DuckDB file: every view renders,
the date filter changes the sessions listed, and the CSV download holds exactly the rows of the
filters, safe to open in a spreadsheet."""

import csv
import io
from datetime import datetime, time, timedelta

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from lib.config import PROJECT_ROOT, load_config
from lib.store.reader import read_db
from tests.appdata import prepare

VIEWS = {
    "Live": "views/live.py",
    "Events": "views/events.py",
    "Compare": "views/compare.py",
    "Sessions": "views/sessions.py",
    "Anomalies": "views/anomalies.py",
    "Labels": "views/labels.py",
    "Overview": "views/overview.py",
}
OLD, MIDDLE, LIVE = "20261125T080000-a1", "20261127T140000-b2", "live-c3"


@pytest.fixture
def prepared_db():
    config = load_config()
    info = prepare(config.db_path)
    return config, info


@pytest.fixture
def downloads(monkeypatch):
    """What each download button would serve, by media file id (as the browser fetches it)."""
    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        served[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)

    def csv_of(at, key):
        button = next(b for b in at.get("download_button") if b.proto.id.endswith(key))
        data = served[button.proto.url.rsplit("/", 1)[1].split(".")[0]]
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))

    return csv_of


def frame(at, column: str):
    """The first table on the page with `column` (AppTest does not expose a table's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def open_view(view: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(VIEWS[view]).run()
    assert not at.exception, at.exception
    return at


def test_each_view_renders_on_a_prepared_database(prepared_db):
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    for view, path in VIEWS.items():
        at.switch_page(path).run()
        assert not at.exception, (view, at.exception)
        assert not at.error, view
        assert at.title[0].value.startswith(view)


def test_views_are_the_files_under_views_in_their_declared_order(tmp_path):
    from lib.page.views import find_views

    assert [(v.title, v.filters, v.needs_database) for v in find_views(PROJECT_ROOT / "views")][:8] == [
        ("Live", False, True),
        ("Overview", False, True),
        ("Events", False, True),
        ("Compare", True, True),
        ("Sessions", False, True),
        ("Anomalies", True, True),
        ("Labels", True, True),
        ("Health", False, False),
    ]
    (tmp_path / "b.py").write_text('TITLE = "B"\nFILTERS = True\n')
    (tmp_path / "a.py").write_text('"""A view."""\nTITLE = "A"\nORDER = 200\n')
    (tmp_path / "_helper.py").write_text("x = 1\n")
    assert [(v.name, v.title, v.order, v.filters) for v in find_views(tmp_path)] == [
        ("b", "B", 100, True),
        ("a", "A", 200, False),
    ]
    (tmp_path / "c.py").write_text("ORDER = 3\n")
    with pytest.raises(ValueError, match="c.py: a view file needs TITLE"):
        find_views(tmp_path)
    (tmp_path / "c.py").write_text('TITLE = "C"\nORDER = "first"\n')
    with pytest.raises(ValueError, match="c.py: ORDER must be a whole number written out, got 'first'"):
        find_views(tmp_path)


def test_the_shared_filters_survive_a_visit_to_a_view_without_them(prepared_db):
    at = open_view("Anomalies")
    at.sidebar.selectbox(key="session").set_value(MIDDLE).run()
    at.sidebar.multiselect(key="sensors").set_value(["humidite"]).run()
    at.switch_page(VIEWS["Live"]).run()
    assert not at.sidebar.selectbox  # Live has no shared filters
    at.switch_page(VIEWS["Anomalies"]).run()
    assert at.sidebar.selectbox(key="session").value == MIDDLE
    assert at.sidebar.multiselect(key="sensors").value == ["humidite"]
    assert set(frame(at, "detector")["sensor"]) == {"humidite"}


def test_a_view_says_as_of_when_and_refresh_reads_again(prepared_db):
    """Anomalies does not refresh by itself: it says when its figures were read, and Refresh reads
    a newly stored anomaly; a view that stops early (Compare with no verdict) says it too."""
    import re

    from lib.store.batch import Batch
    from lib.store.writer import write_batch

    config, info = prepared_db
    at = open_view("Anomalies")
    before = len(frame(at, "detector"))
    as_of = next(c.value for c in at.caption if c.value.startswith("As of "))
    assert re.fullmatch(r"As of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(.+\)\.", as_of)
    batch = Batch()
    t = int((info["now"] - timedelta(seconds=5)).timestamp() * 1e6)
    batch.readings[(LIVE, 500_000)] = ("humidite", t, 99.0)
    batch.states[(LIVE, 500_000, "dbscan")] = ("humidite", t, "anomaly", 0.99)
    write_batch(config.db_path, batch)
    at.run()
    assert len(frame(at, "detector")) == before  # cached: what the "as of" says
    at.button(key="refresh_view").click().run()
    assert len(frame(at, "detector")) == before + 1
    at.switch_page(VIEWS["Compare"]).run()
    at.sidebar.toggle(key="whole_range").set_value(False).run()
    far = (info["now"] - timedelta(days=30)).date()
    at.sidebar.date_input(key="range_dates").set_value((far, far)).run()
    assert "No verdicts" in at.info[0].value
    assert any(c.value.startswith("As of ") for c in at.caption)


def test_live_view_shows_each_sensor_and_totals(prepared_db):
    at = open_view("Live")
    assert {"humidite", "temperature", "pression"} <= {s.value for s in at.subheader}
    metrics = {m.label: m.value for m in at.metric}
    # 3 sessions x 600 x 3 sensors + the hostile one, less the gaps (4 s, 4 s, 30 s x 3 sensors)
    assert metrics["Readings"] == "5,287" and metrics["Rejects"] == "9"
    assert len(at.get("vega_lite_chart")) >= 3


def test_compare_view_reports_agreement_and_scores_against_the_truth(prepared_db):
    at = open_view("Compare")
    at.sidebar.selectbox(key="session").set_value(MIDDLE).run()
    assert not at.exception
    assert any("simulator injections" in c.value for c in at.caption)
    at.sidebar.selectbox(key="session").set_value(OLD).run()
    assert any("2 operator labels" in c.value for c in at.caption)
    assert {"dbscan", "iforest", "rule:range"} == set(frame(at, "judged")["detector"])
    prf = frame(at, "precision")
    assert ((prf["precision"] >= 0) & (prf["precision"] <= 1)).all()
    at.button(key="replay_run").click().run()
    assert not at.exception and not at.error
    assert any(m.label == "Flagged by the replay" for m in at.metric)


def test_the_date_filter_changes_the_sessions_listed(prepared_db):
    config, info = prepared_db
    at = open_view("Sessions")
    listed = lambda: set(frame(at, "duration_s")["session_id"])  # noqa: E731
    assert listed() == {OLD, MIDDLE, LIVE}
    now = info["now"]
    at.date_input(key="sessions_dates").set_value(((now - timedelta(days=2)).date(), now.date())).run()
    assert listed() == {MIDDLE, LIVE}
    day = (now - timedelta(days=3)).date()
    at.date_input(key="sessions_dates").set_value((day, day)).run()
    assert listed() == {OLD}
    far = (now - timedelta(days=30)).date()
    at.date_input(key="sessions_dates").set_value((far, far)).run()
    assert not at.exception and "No session between" in at.info[0].value
    at.date_input(key="sessions_dates").set_value((now.date(), day)).run()
    assert not at.exception and f"ends ({day}) before it starts ({now.date()})" in at.error[0].value


def expected_anomalies(config, session, sensor, detector, start=None, end=None):
    with read_db(config.db_path) as conn:
        return conn.execute(
            """
            SELECT s.session_id, s.seq, s.detector FROM states s
            WHERE s.state = 'anomaly' AND s.session_id = ? AND s.sensor = ? AND s.detector = ?
              AND s.ts >= coalesce(?::TIMESTAMP, s.ts) AND s.ts <= coalesce(?::TIMESTAMP, s.ts)
            ORDER BY s.ts""",
            [session, sensor, detector, start, end],
        ).fetchall()


def test_the_csv_holds_exactly_the_rows_of_the_filters(prepared_db, downloads, monkeypatch):
    """In the operator's zone (Asia/Kolkata, UTC+05:30): the range is picked on that clock, the
    table shows that clock, the CSV gives UTC and that clock beside it."""
    import pandas as pd

    monkeypatch.setenv("VIGIE_APP_TIMEZONE", "Asia/Kolkata")
    config, info = prepared_db
    shift = timedelta(hours=5, minutes=30)
    at = open_view("Anomalies")
    at.sidebar.selectbox(key="session").set_value(MIDDLE).run()
    at.sidebar.multiselect(key="sensors").set_value(["humidite"]).run()
    at.sidebar.multiselect(key="detectors").set_value(["dbscan"]).run()
    rows = downloads(at, "download_anomalies")
    want = expected_anomalies(config, MIDDLE, "humidite", "dbscan")
    assert len(want) > 5
    assert [(r["session_id"], int(r["seq"]), r["detector"]) for r in rows] == want
    assert all(r["sensor"] == "humidite" for r in rows)
    shown = frame(at, "detector")
    assert len(shown) == len(want)
    utc = pd.to_datetime([r["ts"] for r in rows]).tz_localize(None)
    assert list(shown["ts"]) == list(utc + shift)
    assert all(r["ts"].endswith("Z") and r["local_time"].endswith("+05:30") for r in rows)
    assert [pd.Timestamp(r["local_time"]).tz_convert("UTC").tz_localize(None) for r in rows] == list(utc)

    # a time range inside the session, picked on the operator's clock: only the flagged readings in it
    start = info["sessions"][MIDDLE] + timedelta(minutes=2)
    local = start + shift
    at.sidebar.toggle(key="whole_range").set_value(False).run()
    at.sidebar.date_input(key="range_dates").set_value((local.date(), local.date())).run()
    at.sidebar.time_input(key="range_from").set_value(time(local.hour, local.minute)).run()
    end_minute = local + timedelta(minutes=4)
    at.sidebar.time_input(key="range_to").set_value(time(end_minute.hour, end_minute.minute)).run()
    assert not at.exception
    if end_minute.date() != local.date():
        pytest.skip("the chosen range crosses midnight")
    lo = start.replace(second=0, microsecond=0)
    hi = (end_minute - shift).replace(second=59, microsecond=999999)
    narrowed = downloads(at, "download_anomalies")
    want = expected_anomalies(config, MIDDLE, "humidite", "dbscan", lo, hi)
    assert 0 < len(want) < len(rows)
    assert [(r["session_id"], int(r["seq"]), r["detector"]) for r in narrowed] == want


def test_a_reversed_time_range_says_so(prepared_db):
    config, info = prepared_db
    day = info["sessions"][MIDDLE].date()
    at = open_view("Anomalies")
    at.sidebar.toggle(key="whole_range").set_value(False).run()
    at.sidebar.date_input(key="range_dates").set_value((day, day)).run()
    at.sidebar.time_input(key="range_from").set_value(time(14, 0)).run()
    at.sidebar.time_input(key="range_to").set_value(time(13, 0)).run()
    assert not at.exception
    assert f"ends ({day} 13:00) before it starts ({day} 14:00)" in at.main.error[0].value
    assert "ends before it starts" in at.sidebar.error[0].value
    assert not at.dataframe and not at.get("download_button")


def test_the_csv_is_safe_to_open_in_a_spreadsheet(prepared_db, downloads):
    at = open_view("Anomalies")
    at.sidebar.selectbox(key="session").set_value(LIVE).run()
    at.sidebar.multiselect(key="sensors").set_value(["=cmd|' /C calc'!A0"]).run()
    rows = downloads(at, "download_anomalies")
    assert len(rows) == 1
    assert rows[0]["sensor"] == "'=cmd|' /C calc'!A0"  # text, not a formula
    assert rows[0]["value"] == "-3.5"  # a negative number stays a number


def test_app_explains_an_empty_system():
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    for view, path in VIEWS.items():
        at.switch_page(path).run()
        assert not at.exception, view
        assert "No data yet" in at.info[0].value
    # what each program and board is doing is what an empty system needs most
    at.switch_page("views/health.py").run()
    assert not at.exception and at.title[0].value == "Health"
    assert any("supervisord does not answer" in c.value for c in at.caption)


def test_the_password_gate_keeps_the_page_closed_until_the_right_password(prepared_db, monkeypatch):
    monkeypatch.setenv("VIGIE_APP_PASSWORD", "s3cret-Ω")
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Vigie"] and not at.metric  # nothing but the gate
    at.text_input(key="password").input("s3cret")  # a form: the value goes with the submit
    at.button(key="login").click().run()
    assert at.error and "Wrong password" in at.error[0].value and not at.metric
    at.text_input(key="password").input("s3cret-Ω")
    at.button(key="login").click().run()
    assert not at.exception and at.title[0].value == "Live" and at.metric


def test_check_password_compares_in_constant_time(monkeypatch):
    import hmac

    from lib.page import auth

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert auth.check_password("pw", "pw") and not auth.check_password("pw", "pW")
    assert calls == [(b"pw", b"pw"), (b"pw", b"pW")]
    assert not auth.check_password("", "") and not auth.check_password("pw", None)
    assert not auth.gate_enabled("") and auth.gate_enabled("x")


def test_export_neutralises_every_formula_start():
    import pandas as pd

    from lib.page.export import to_csv

    cells = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", "a=b"]
    out = list(csv.reader(io.StringIO(to_csv(pd.DataFrame({"c": cells, "v": [-1.5] * 8})).decode(), newline="")))
    assert [r[0] for r in out[1:]] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "ok", "a=b"]
    assert {r[1] for r in out[1:]} == {"-1.5"}


def test_labelling_a_flagged_reading_sends_it_to_the_store(prepared_db):
    from tests.test_app_labels import store_until_drained

    config, _ = prepared_db
    at = open_view("Labels")
    at.sidebar.selectbox(key="session").set_value(MIDDLE).run()
    at.button(key="label_confirmed").click().run()
    assert not at.exception and at.success
    assert store_until_drained(config) == 1
    with read_db(config.db_path) as conn:
        stored = conn.execute("SELECT verdict FROM labels WHERE session_id = ?", [MIDDLE]).fetchall()
    assert stored == [("confirmed",)]


def test_chart_data_thins_the_line_but_keeps_every_flagged_reading(prepared_db):
    from lib.page import queries

    config, info = prepared_db
    start, end = info["sessions"][OLD], info["sessions"][OLD] + timedelta(minutes=10)
    with read_db(config.db_path) as conn:
        line, marks = queries.chart_data(conn, "humidite", start, end, buckets=50)
        every = conn.execute(
            "SELECT ts, value FROM readings WHERE sensor = 'humidite' AND ts BETWEEN ? AND ?", [start, end]
        ).df()
        flagged = conn.execute(
            """SELECT s.session_id, s.seq, s.detector, r.value FROM states s JOIN readings r
            USING (session_id, seq) WHERE s.sensor = 'humidite' AND s.state = 'anomaly' AND s.ts BETWEEN ? AND ?
            ORDER BY s.ts, s.detector""",
            [start, end],
        ).fetchall()
    assert len(every) == 596 and len(line) <= 2 * 50 + len(marks) < len(every)  # 600 less a 4 s gap
    assert line["value"].max() == every["value"].max() and line["value"].min() == every["value"].min()
    assert list(marks[["session_id", "seq", "detector", "value"]].itertuples(index=False, name=None)) == flagged
    assert set(marks[["ts", "value"]].itertuples(index=False, name=None)) <= set(
        line[["ts", "value"]].itertuples(index=False, name=None)
    )
    both = marks.groupby(["session_id", "seq"])["detector"].agg(lambda d: ", ".join(sorted(d)))
    assert (
        marks.set_index(["session_id", "seq"])["flagged_by"]
        == both.reindex(marks.set_index(["session_id", "seq"]).index)
    ).all()


def test_rule_limits_come_from_the_configuration(monkeypatch):
    from lib.page.charts import rule_limits

    config = load_config(env={"VIGIE_DETECTION_RULES": '{"*": {"max": 100}, "humidite": {"min": 0, "max": 90}}'})
    assert rule_limits(config, "humidite") == {"min": 0.0, "max": 90.0}
    assert rule_limits(config, "temperature") == {"max": 100.0}
    assert rule_limits(load_config(env={}), "humidite") == {}


def test_the_warm_up_bar_counts_to_each_detectors_own_warm_up(monkeypatch):
    """A new session of humidite, 30 readings in: dbscan (window 40 for this sensor) and
    likelihood each count to their own warm-up (the detector's window or memory, plus the
    calibration's readings for a calibrated one), not to [detection] window."""
    import json
    from datetime import timezone

    from lib.messages import SessionStart
    from lib.store.batch import Batch
    from lib.store.schema import init_db
    from lib.store.writer import write_batch

    monkeypatch.setenv("VIGIE_DETECTION_DETECTORS", "dbscan,likelihood")
    monkeypatch.setenv("VIGIE_DETECTION_SENSORS", json.dumps({"humidite": {"params": {"dbscan": {"window": 40}}}}))
    config = load_config()
    start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=40)
    us = lambda t: int(t.replace(tzinfo=timezone.utc).timestamp() * 1e6)  # noqa: E731
    batch = Batch()
    batch.sessions.append(SessionStart(session="new", port="/dev/ttyACM0", baud=9600, host="serre", ts_us=us(start)))
    for seq in range(1, 31):
        t = us(start + timedelta(seconds=seq))
        batch.readings[("new", seq)] = ("humidite", t, 50.0 + seq % 3)
        for det in ("dbscan", "likelihood"):
            batch.states[("new", seq, det)] = ("humidite", t, "initializing", None)
    init_db(config.db_path)
    write_batch(config.db_path, batch)
    at = open_view("Live")
    bars = [p.proto.text for p in at.get("progress")]
    assert bars == ["dbscan: initialisation 30/240", "likelihood: initialisation 30/300"]


def test_the_overview_counts_flagged_readings_per_sensor_like_a_hand_count(prepared_db):
    """Over 7 days (every prepared session): the sensors with flagged readings and how many
    readings were flagged, from the rollups and flags, equal a count over the states."""
    config, info = prepared_db
    at = open_view("Overview")
    at.selectbox(key="overview_span").set_value("7 d").run()
    assert not at.exception and (at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart"))
    caption = next(c.value for c in at.caption if "sensors had flagged readings" in c.value)
    with read_db(config.db_path) as conn:
        per_sensor = dict(
            conn.execute(
                "SELECT sensor, count(DISTINCT (session_id, seq)) FROM states WHERE state = 'anomaly' GROUP BY sensor"
            ).fetchall()
        )
    assert caption.startswith(
        f"{len(per_sensor)} of {len(per_sensor)} sensors had flagged readings in the last 7 d "
        f"({sum(per_sensor.values()):,} readings flagged); cells of 84 min"
    )
