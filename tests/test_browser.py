"""The operator page in a real browser: Debian's chromium driven by Playwright opens the page
served by `streamlit run` on a prepared DuckDB, waits for the chart, downloads the anomalies CSV
and saves screenshots under test-artifacts/ (kept out of git).

`python -m tests.test_browser DIR` serves the same prepared data and saves a screenshot of every
view into DIR (how docs/screenshots/ is made).
"""
from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from lib.config import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
VIEWS = ["Live", "Compare", "Sessions", "Anomalies", "Labels"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(data_dir: Path, extra_env: dict | None = None):
    """`streamlit run app.py` on 127.0.0.1 with VIGIE_PATHS_DATA_DIR=data_dir; stopped on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(VIGIE_PATHS_DATA_DIR=str(data_dir), **(extra_env or {}))
    streamlit = Path(sys.executable).parent / "streamlit"
    log = open(data_dir / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [str(streamlit), "run", str(PROJECT_ROOT / "app.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start: {(data_dir / 'streamlit.log').read_text()}")
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
def browser_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_view(page, view: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(view, exact=True).click()
    page.get_by_role("heading", name=view if view != "Compare" else "Compare algorithms").first.wait_for()
    page.wait_for_load_state("networkidle")


def wait_for_charts(page, n: int = 1) -> None:
    """A Vega chart has drawn when its canvas or svg exists inside the chart element."""
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, "
        "[data-testid=\"stVegaLiteChart\"] svg.marks').length >= n", arg=n)


pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium: make system-deps")]


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


def test_the_page_in_a_real_browser_charts_and_downloads_the_anomalies_csv(tmp_path):
    from lib.config import load_config
    from lib.store.reader import read_db
    from tests.appdata import prepare
    data_dir = tmp_path / "data"
    info = prepare(load_config(env={"VIGIE_PATHS_DATA_DIR": str(data_dir)}).db_path)
    with read_db(data_dir / "vigie.duckdb") as conn:
        flagged = dict(conn.execute("SELECT session_id, count(*) FROM states WHERE state = 'anomaly' "
                                    "GROUP BY session_id").fetchall())
    ARTIFACTS.mkdir(exist_ok=True)
    with served(data_dir) as url, browser_page() as page:
        page.goto(url)
        page.get_by_role("heading", name="Live").first.wait_for()
        wait_for_charts(page, 3)
        page.screenshot(path=str(ARTIFACTS / "browser-live.png"), full_page=True)

        # every session: all flagged rows, the hostile sensor name made harmless
        open_view(page, "Anomalies")
        rows = download_csv(page, "Download CSV (anomalies)", ARTIFACTS / "browser-anomalies.csv")
        assert len(rows) == sum(flagged.values()) > 100
        assert {r["session_id"] for r in rows} == set(info["sessions"])
        assert all(not r["sensor"].startswith(("=", "+", "-", "@")) for r in rows)
        assert any(r["sensor"] == "'=cmd|' /C calc'!A0" for r in rows)

        # selecting a session in Sessions opens it: the CSV then holds that session's rows only
        open_view(page, "Sessions")
        select_session_row(page, 1)   # newest first: live-c3, then 20261127T140000-b2
        page.get_by_text("Open: 20261127T140000-b2").wait_for()
        page.screenshot(path=str(ARTIFACTS / "browser-sessions.png"), full_page=True)
        open_view(page, "Anomalies")
        page.get_by_text(f"{flagged['20261127T140000-b2']} flagged").wait_for()
        rows = download_csv(page, "Download CSV (anomalies)", ARTIFACTS / "browser-anomalies-session.csv")
        assert len(rows) == flagged["20261127T140000-b2"]
        assert {r["session_id"] for r in rows} == {"20261127T140000-b2"}
        page.screenshot(path=str(ARTIFACTS / "browser-anomalies.png"), full_page=True)


def screenshots(out: Path) -> None:
    """Every view of the page on the prepared data, for the README."""
    import tempfile
    from datetime import datetime, timedelta, timezone

    from lib.config import load_config
    from tests.appdata import prepare
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        # data ending a little ahead, so the sensors are not yet silent once the server is up
        prepare(load_config(env={"VIGIE_PATHS_DATA_DIR": str(data_dir)}).db_path,
                now=datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=20), hostile=False)
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
    screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
