"""Serve the operator page: `python -m workers.app` runs `streamlit run app.py` with the address
and port from the configuration."""

from __future__ import annotations

import ipaddress
import os
import signal
import sys

from lib.config import PROJECT_ROOT, ConfigError, load_config
from lib.runtime import setup_logging
from lib.supervision import die_with_supervisor


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def streamlit_command(entry, address: str, port: int) -> list[str]:
    """`streamlit run entry` on address:port, headless, without usage statistics or a file watcher."""
    streamlit = os.path.join(os.path.dirname(sys.executable), "streamlit")
    return [
        streamlit,
        "run",
        str(entry),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]


def main(argv=None) -> int:
    log = setup_logging("app")
    die_with_supervisor()
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if not is_loopback(config.app.address) and not config.app.password:
        log.warning(
            "serving the page on %s without a password: anyone who can reach this machine sees "
            "the data. Set [app] password to turn the gate on.",
            config.app.address,
        )
    # page_server.py serves app.py behind the download gate (lib.page.auth.MediaGate).
    args = streamlit_command(PROJECT_ROOT / "page_server.py", config.app.address, config.app.port)
    # uvicorn (which serves an st.App) stops gracefully on SIGTERM, then raises the signal again
    # with the handler it found at start: ignored here (an ignored signal survives exec), so a
    # stop ends with exit status 0 instead of "terminated by SIGTERM".
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main())
