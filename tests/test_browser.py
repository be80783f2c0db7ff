"""The operator page in a real browser: Debian's chromium driven by Playwright opens the page
served by `streamlit run` on a prepared DuckDB (one server for the module's tests, each test in a
fresh browser session), waits for the charts, reads their axes and tooltips, types in the
pickers, downloads the anomalies CSV and saves screenshots under test-artifacts/ (kept out of git).

`python -m tests.test_browser DIR` serves the same prepared data and saves a screenshot of every
view into DIR (test-artifacts/screenshots by default; the README's pictures come from a real run:
`python -m tools.screenshots`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from lib.config import PROJECT_ROOT
from workers.app import streamlit_command

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
VIEWS = ["Live", "Compare", "Sessions", "Anomalies", "Labels"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(data_dir: Path, extra_env: dict | None = None, entry: str = "app.py"):
    """`streamlit run app.py` (or `entry`) on 127.0.0.1 with VIGIE_PATHS_DATA_DIR=data_dir; stopped
    on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(VIGIE_PATHS_DATA_DIR=str(data_dir), **(extra_env or {}))
    log = open(data_dir / "streamlit.log", "wb")
    proc = subprocess.Popen(
        streamlit_command(PROJECT_ROOT / entry, "127.0.0.1", port),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start: {(data_dir / 'streamlit.log').read_text()}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000, timezone_id: str | None = None):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(
                viewport={"width": width, "height": height}, accept_downloads=True, timezone_id=timezone_id
            )
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_view(page, view: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(view, exact=True).click()
    page.get_by_role("heading", name=view if view != "Compare" else "Compare algorithms").first.wait_for()
    page.wait_for_load_state("networkidle")


def wait_for_charts(page, n: int = 1) -> None:
    """A Vega chart has drawn when its canvas or svg exists inside the chart element."""
    page.wait_for_function(
        'n => document.querySelectorAll(\'[data-testid="stVegaLiteChart"] canvas, '
        '[data-testid="stVegaLiteChart"] svg.marks\').length >= n',
        arg=n,
    )


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium: make system-deps"),
]


def select_session_row(page, row: int) -> None:
    """Tick the selection box of a row of the Sessions table (drawn on a canvas: by position)."""
    grid = page.get_by_test_id("stDataFrame").first
    grid.wait_for()
    page.wait_for_timeout(1000)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 14, box["y"] + 35 + 35 * row + 17)
    page.wait_for_load_state("networkidle")


def download_csv(page, label: str, saved: Path) -> list[dict]:
    button = page.get_by_test_id("stDownloadButton").filter(has_text=label)
    with page.expect_download() as download:
        button.click()
    download.value.save_as(saved)
    return list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"), newline="")))


#: the operator's sensors for this module's page: pression hidden, humidite named, temperature first
SENSORS = {
    "pression": {"hidden": True},
    "humidite": {"label": "Humidité", "unit": "%", "min": 30, "max": 80},
    "temperature": {"order": 1},
}


def afternoon_zone(hour: int = 15) -> str:
    """A fixed-offset zone where it is now `hour` o'clock: a 12-hour clock would then show "03"."""
    offset = (hour - datetime.now(timezone.utc).hour + 12) % 24 - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The page served on prepared data, in a zone where it is now the afternoon, beside a real
    supervisord running stand-ins for the store and the producer."""
    from lib.config import load_config
    from tests.appdata import prepare
    from tests.supervised import SLEEPER, supervisord

    data_dir = tmp_path_factory.mktemp("browser") / "data"
    info = prepare(load_config(env={"VIGIE_PATHS_DATA_DIR": str(data_dir)}).db_path)
    zone = afternoon_zone()
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        supervisord(data_dir, {"store": SLEEPER, "producer": SLEEPER}) as ctl,
        served(data_dir, {"VIGIE_APP_TIMEZONE": zone, "VIGIE_SENSORS": json.dumps(SENSORS)}) as url,
    ):
        yield SimpleNamespace(url=url, data_dir=data_dir, info=info, zone=zone, supervisor=ctl)


def x_axis_labels(page) -> list[list[str]]:
    """Per chart on the page, the labels of its time axis."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).map(c =>
        Array.from(c.querySelectorAll('g[aria-label^="X-axis"] .role-axis-label text')).map(t => t.textContent))""")


def test_the_page_in_a_real_browser_charts_and_downloads_the_anomalies_csv(app):
    from lib.store.reader import read_db

    with read_db(app.data_dir / "vigie.duckdb") as conn:
        flagged = dict(
            conn.execute(
                "SELECT session_id, count(*) FROM states WHERE state = 'anomaly' "
                "AND sensor <> 'pression' GROUP BY session_id"
            ).fetchall()
        )  # hidden
    with browser_page() as page:
        page.goto(app.url)
        page.get_by_role("heading", name="Live").first.wait_for()
        wait_for_charts(page, 3)
        page.screenshot(path=str(ARTIFACTS / "browser-live.png"), full_page=True)

        # every session: all flagged rows, the hostile sensor name made harmless
        open_view(page, "Anomalies")
        rows = download_csv(page, "Download CSV (anomalies)", ARTIFACTS / "browser-anomalies.csv")
        assert len(rows) == sum(flagged.values()) > 100
        assert {r["session_id"] for r in rows} == set(app.info["sessions"])
        assert all(not r["sensor"].startswith(("=", "+", "-", "@")) for r in rows)
        assert any(r["sensor"] == "'=cmd|' /C calc'!A0" for r in rows)

        # selecting a session in Sessions opens it: the CSV then holds that session's rows only
        open_view(page, "Sessions")
        select_session_row(page, 1)  # newest first: live-c3, then 20261127T140000-b2
        page.get_by_text("Open: 20261127T140000-b2").wait_for()
        page.screenshot(path=str(ARTIFACTS / "browser-sessions.png"), full_page=True)
        open_view(page, "Anomalies")
        page.get_by_text(f"{flagged['20261127T140000-b2']} flagged").wait_for()
        rows = download_csv(page, "Download CSV (anomalies)", ARTIFACTS / "browser-anomalies-session.csv")
        assert len(rows) == flagged["20261127T140000-b2"]
        assert {r["session_id"] for r in rows} == {"20261127T140000-b2"}
        page.screenshot(path=str(ARTIFACTS / "browser-anomalies.png"), full_page=True)


def test_the_axes_use_a_24_hour_clock_in_the_operators_zone_with_utc_on_hover(app):
    """The browser runs in New York; the page's zone is one where it is now about 15:00. Every time
    axis reads 14:xx/15:xx (not 02/03), and a flagged reading's tooltip gives both clocks."""
    with browser_page(timezone_id="America/New_York") as page:
        page.goto(app.url)
        wait_for_charts(page, 3)
        page.wait_for_timeout(500)
        labels = [label for chart in x_axis_labels(page) for label in chart]
        assert labels and all(re.fullmatch(r"\d\d:\d\d(:\d\d(\.\d{3})?)?", label) for label in labels), labels
        hours = {int(label[:2]) for label in labels}
        assert hours <= {14, 15, 16} and hours & {14, 15}, labels
        assert page.get_by_text(f"time ({app.zone})").first.is_visible()

        point_at(page, chart_of(page, "Humidité (%)").locator(".mark-symbol path").first)
        tip = page.locator("#vg-tooltip-element")
        tip.wait_for()
        text = tip.inner_text()
        local = re.search(rf"time \({re.escape(app.zone)}\)\s+(\S+ \S+)", text)
        utc = re.search(r"time \(UTC\)\s+(\S+ \S+)", text)
        assert local and utc, text
        shift = datetime.fromisoformat(local[1]) - datetime.fromisoformat(utc[1])
        offset = datetime.now(timezone.utc).astimezone(__import__("zoneinfo").ZoneInfo(app.zone)).utcoffset()
        assert shift == offset, text


def point_at(page, element) -> None:
    """Move the mouse over `element` in the middle of the window (the page's sticky header would
    take a hover at the top; a marker drawn on top of it may, which shows the same tooltip)."""
    element.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    box = element.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def chart_of(page, sensor: str):
    """The chart under a sensor's heading on the Live view."""
    heading = page.get_by_role("heading", name=sensor, exact=True).first
    return heading.locator('xpath=following::div[@data-testid="stVegaLiteChart"][1]')


def test_a_gap_is_drawn_as_a_break_and_marked(app):
    """The live session has a 30 s recorded gap (port lost) within the last 5 minutes: the line is
    two separate paths, and a band marks the break, naming it on hover."""
    with browser_page() as page:
        page.goto(app.url)
        wait_for_charts(page, 3)
        page.get_by_test_id("stMain").get_by_text("Pause", exact=True).click()  # no refresh while measuring
        page.wait_for_timeout(1500)
        wait_for_charts(page, 3)
        chart = chart_of(page, "Humidité (%)")
        chart.locator("svg.marks").wait_for()
        paths = chart.locator(".mark-line path")
        assert paths.count() == 2
        boxes = [paths.nth(i).bounding_box() for i in range(2)]
        left, right = sorted(boxes, key=lambda b: b["x"])
        assert left["x"] + left["width"] < right["x"]  # nothing drawn across the gap
        band = chart.locator('.mark-rect path[aria-label*="line broken"]').first
        point_at(page, band)
        tip = page.locator("#vg-tooltip-element")
        tip.wait_for()
        assert "gap: port lost" in tip.inner_text() and "31.0" in tip.inner_text()  # 419 s to 450 s
        page.screenshot(path=str(ARTIFACTS / "browser-gap.png"))


def test_the_health_panel_names_a_stopped_producer(app):
    with browser_page() as page:
        page.goto(app.url + "/health")
        page.get_by_role("heading", name="Programs").wait_for()
        assert page.get_by_text("Every program runs").is_visible()
        app.supervisor.supervisor.stopProcess("producer")
        # the panel refreshes by itself; so does the one-line summary every view shows
        page.get_by_text("program producer is stopped").first.wait_for(timeout=15_000)
        assert page.get_by_test_id("stSidebar").get_by_text("program producer is stopped").is_visible()
        page.screenshot(path=str(ARTIFACTS / "browser-health.png"), full_page=True)
        open_view(page, "Live")
        page.get_by_text("Something is wrong with the system").wait_for()
        assert page.get_by_test_id("stMain").get_by_text("program producer is stopped").is_visible()
    app.supervisor.supervisor.startProcess("producer")


def test_a_hidden_sensor_is_gone_from_every_view(app):
    """`[sensors.pression] hidden = true`: no view names it, no picker offers it; the others come
    in the operator's order, under their labels."""
    with browser_page() as page:
        page.goto(app.url)
        wait_for_charts(page, 3)
        headings = page.get_by_test_id("stMain").locator("h3").all_inner_texts()
        assert [h for h in headings if h in ("temperature", "Humidité (%)")] == ["temperature", "Humidité (%)"]
        links = page.get_by_test_id("stSidebarNav").get_by_role("link").all_inner_texts()
        assert len(links) >= 7
        for view in links:
            open_view(page, view)
            page.wait_for_timeout(1000)
            assert "pression" not in page.locator("body").inner_text().lower(), view
            pickers = page.get_by_test_id("stMultiSelect").filter(has_text="Sensors")
            if pickers.count():
                pickers.first.click()
                options = page.get_by_role("option").all_inner_texts()
                assert "Humidité" in options and not any("pression" in o for o in options), (view, options)
                page.keyboard.press("Escape")


def test_the_overview_strip_shows_where_anomalies_were_and_opens_live_there(app):
    """A strip per shown sensor (the hidden one has none), red where readings were flagged; a
    click on a red cell opens Live on that sensor, at that time."""
    with browser_page() as page:
        page.goto(app.url + "/overview")
        page.get_by_role("heading", name="Overview").wait_for()
        wait_for_charts(page, 1)
        cells = page.locator('[data-testid="stVegaLiteChart"] .mark-rect path')
        labels = cells.evaluate_all("cs => cs.map(c => c.getAttribute('aria-label') || '')")
        rows = {found[1] for found in (re.search(r"; sensor: (.*?);", label) for label in labels) if found}
        assert rows == {"temperature", "Humidité", "=cmd|' /C calc'!A0"}, rows
        flagged = [i for i, label in enumerate(labels) if "flagged by: dbscan" in label and "Humidité" in label]
        assert flagged
        page.screenshot(path=str(ARTIFACTS / "browser-overview.png"))
        point_at(page, cells.nth(flagged[-1]))
        page.mouse.down()
        page.mouse.up()
        page.get_by_text("From the Overview: Humidité from").wait_for(timeout=20_000)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(ARTIFACTS / "browser-overview-live.png"))
        wait_for_charts(page, 1)
        assert page.get_by_test_id("stMain").locator("h3").all_inner_texts() == ["Humidité (%)"]
        page.screenshot(path=str(ARTIFACTS / "browser-overview-live.png"))


def test_a_date_typed_in_sessions_and_confirmed_with_enter_applies(app):
    from lib.page.clock import Clock

    clock = Clock.from_setting(app.zone)
    middle = clock.wall(app.info["sessions"]["20261127T140000-b2"]).date()
    with browser_page() as page:
        page.goto(app.url + "/sessions")
        page.get_by_text("3 session(s) between").wait_for()
        start = page.get_by_role("spinbutton", name=re.compile(r"^year, Sessions between .* start date$"))
        start.click()
        page.keyboard.type(middle.strftime("%Y%m%d"))
        page.keyboard.press("Enter")
        page.get_by_text(f"2 session(s) between {middle} and").wait_for(timeout=10_000)


def test_open_events_are_shaded_on_live_and_counted_in_the_tab_title(tmp_path):
    """The prepared data with its events made by the real tracker: a background tab says how many
    events are open, and Live shades each open event's span on its sensor's chart, naming the
    event on hover."""
    from lib.config import load_config
    from tests.test_app_events import prepare_with_events

    data_dir = tmp_path / "data"
    info = prepare_with_events(load_config(env={"VIGIE_PATHS_DATA_DIR": str(data_dir)}))
    assert info["open"] > 0
    with served(data_dir) as url, browser_page() as page:
        page.goto(url)
        wait_for_charts(page, 3)
        page.wait_for_function("n => document.title === `(${n}) Vigie`", arg=info["open"], timeout=30_000)
        shaded = page.locator('[data-testid="stVegaLiteChart"] .mark-rect path[aria-label*="event"]')
        shaded.first.wait_for()
        assert shaded.count() >= 1
        point_at(page, shaded.first)
        tip = page.locator("#vg-tooltip-element")
        tip.wait_for()
        assert "event" in tip.inner_text() and "severity" in tip.inner_text(), tip.inner_text()
        page.screenshot(path=str(ARTIFACTS / "browser-events.png"))


def screenshots(out: Path) -> None:
    """Every view of the page on the prepared data, for the README."""
    import tempfile
    from datetime import datetime, timezone

    from lib.config import load_config
    from tests.appdata import prepare

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        # data ending a little ahead, so the sensors are not yet silent once the server is up
        prepare(
            load_config(env={"VIGIE_PATHS_DATA_DIR": str(data_dir)}).db_path,
            now=datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=20),
            hostile=False,
        )
        import json

        from tests.appdata import RULES

        with served(data_dir, {"VIGIE_DETECTION_RULES": json.dumps(RULES)}) as url, browser_page(1400, 1500) as page:
            page.goto(url)
            page.get_by_role("heading", name="Live").first.wait_for()
            wait_for_charts(page, 3)
            # 15 minutes: the live session's start, where the detectors were initializing, shows
            page.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()
            page.get_by_role("option", name="15 min").click()
            page.wait_for_timeout(4000)
            wait_for_charts(page, 3)
            page.screenshot(path=str(out / "live.png"))
            open_view(page, "Sessions")
            select_session_row(page, 1)
            page.get_by_text("Open: 20261127T140000-b2").wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "sessions.png"))
            for view in ("Compare", "Anomalies", "Labels"):
                open_view(page, view)
                if view == "Compare":
                    wait_for_charts(page, 2)
                    page.get_by_role("button", name="Replay").click()
                    wait_for_charts(page, 3)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / f"{view.lower()}.png"))


if __name__ == "__main__":
    screenshots(Path(sys.argv[1]) if len(sys.argv) > 1 else ARTIFACTS / "screenshots")
