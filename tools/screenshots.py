"""The README's screenshots, from `make run`'s own system: `python -m tools.screenshots [--seconds N] [--out DIR]`.

Starts the real system as `make run` does (`workers.launch`, vigie.toml as it is: the simulated
board playing the demo scenario) in a temporary data folder, lets it run `--seconds` so that the
detectors have something to flag, then opens the page in headless Chromium (Playwright, as
tests/test_browser.py does) and saves one picture per view into `--out` (docs/screenshots).
Nothing is prepared: what the pictures show is what a new user sees after that long.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from lib.config import PROJECT_ROOT
from tests.system import System, wait_for
from tests.test_browser import browser_page, open_view, wait_for_charts

# The views in the README, and what each picture waits for.
VIEWS = ("Live", "Overview", "Health", "Events", "Compare", "Sessions", "Anomalies", "Labels")


def settle(page, timeout_s: float = 20) -> None:
    """Wait for a moment between two refreshes: while Streamlit reruns, it fades what it redraws
    and shows its running indicator."""
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_s * 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=120, help="how long the system runs before the pictures")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "screenshots")
    ap.add_argument("--views", nargs="*", default=list(VIEWS))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigie-screenshots-") as tmp, System(Path(tmp)) as system:
        wait_for(lambda: system.count("readings") > 0, 120, what="the first reading stored")
        print(f"make run's system is up; letting it run {args.seconds:.0f} s", flush=True)
        time.sleep(args.seconds)
        url = f"http://127.0.0.1:{system.app_port}"
        with browser_page(1400, 1300) as page:
            page.goto(url)
            for view in args.views:
                open_view(page, view)
                if view in ("Live", "Compare"):
                    wait_for_charts(page, 2)
                elif view == "Overview":
                    wait_for_charts(page, 1)
                page.wait_for_timeout(3000)  # the rest of the view (tables, the health panel)
                settle(page)
                path = args.out / f"{view.lower()}.png"
                page.screenshot(path=str(path))
                print(f"  {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}", flush=True)
        if system.stop() != 0:
            print(system.log()[-3000:])
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
