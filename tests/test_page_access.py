"""The password gate of the page in a real browser, on the real page server (page_server.py):
Enter logs in, a download needs the logged-in browser's cookie (a request without it, as curl
would make, is refused), and wrong guesses slow down.

Before: the anomalies CSV's URL (/media/<id>.csv) answered 200 to curl with no session, even
after the logged-in browser had closed; 41 guesses went through in 12 s.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from lib.config import load_config
from lib.page import auth
from tests.appdata import prepare
from tests.test_browser import CHROMIUM, browser_page, open_view, served

PASSWORD = "s3cret-Ω"


def _status(url: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.browser
@pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_downloads_need_the_logged_in_browser_and_enter_logs_in(tmp_path):
    data_dir = tmp_path / "data"
    prepare(load_config(env={"VIGIE_PATHS_DATA_DIR": str(data_dir)}).db_path)
    with served(data_dir, {"VIGIE_APP_PASSWORD": PASSWORD}, entry="page_server.py") as url, browser_page() as page:
        page.goto(url)
        field = page.get_by_label("Password", exact=True)
        field.fill(PASSWORD)
        field.press("Enter")  # no click: Enter submits the form
        page.get_by_role("heading", name="Live").first.wait_for()
        open_view(page, "Anomalies")
        button = page.get_by_test_id("stDownloadButton").filter(has_text="Download CSV (anomalies)")
        with page.expect_download() as download:
            button.click()
        media = download.value.url
        assert "/media/" in media and download.value.failure() is None
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        assert auth.COOKIE in cookies
        assert _status(media) == 403  # curl, no session
        assert _status(media, "vigie_auth=forged") == 403
        assert _status(media, f"{auth.COOKIE}={cookies[auth.COOKIE]}") == 200  # the logged-in browser
        assert _status(f"{url}{auth.LOGIN_PATH}guessed") == 403


def test_wrong_guesses_slow_down_per_client_and_a_right_one_clears_them():
    t = [100.0]
    guesses = auth.Guesses(clock=lambda: t[0])
    for _ in range(auth.FREE_GUESSES - 1):
        guesses.failed("a")
        assert guesses.wait_s("a") == 0
    waits = []
    for _ in range(5):
        guesses.failed("a")
        waits.append(guesses.wait_s("a"))
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert guesses.wait_s("b") == 0  # another client is not slowed
    guesses.succeeded("a")
    assert guesses.wait_s("a") == 0


def test_the_gate_refuses_even_the_right_password_while_a_client_must_wait(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from lib.config import PROJECT_ROOT

    monkeypatch.setenv("VIGIE_PATHS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIGIE_APP_PASSWORD", PASSWORD)
    monkeypatch.setattr(auth, "GUESSES", auth.Guesses(clock=lambda: 0.0))  # time stands still
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    for _ in range(auth.FREE_GUESSES):
        at.text_input(key="password").input("wrong")
        at.button(key="login").click().run()
    assert "Wrong password" in at.error[0].value
    at.text_input(key="password").input(PASSWORD)
    at.button(key="login").click().run()
    assert "Too many wrong passwords" in at.error[0].value and not at.metric  # still only the gate
