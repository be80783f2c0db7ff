"""A foreign file at the database path: the store says so in one clear line and stays stopped
(supervisord does not restart it in a loop), the file is left byte for byte as it was, the rest of
the system keeps taking the board's lines into the transport, and once the operator moves the file
away and starts the store, everything is stored. The same running system shows the control
socket's permissions and that supervisord opens no TCP port."""

from __future__ import annotations

import hashlib
import stat
import time

import psutil
import pytest

from tests.faults.common import (
    assert_exactly_once,
    ledger_lines,
    lost_and_duplicated,
    report,
    sim_env,
    status,
    wait_all_judged,
)
from tests.system import System, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(900)]

FOREIGN = b"SQLite format 3\x00" + bytes(range(256)) * 64  # someone's SQLite file, say


def test_foreign_file_refused_untouched_then_recovered_and_control_socket_private(tmp_path):
    ledger = tmp_path / "ledger.txt"
    data = tmp_path / "data"
    data.mkdir()
    (data / "vigie.duckdb").write_bytes(FOREIGN)
    digest = hashlib.sha256(FOREIGN).hexdigest()
    with System(tmp_path, sim_env(ledger, 100.0, 1500)) as system:
        wait_for(
            lambda: status(system).get("store", ("",))[0] in ("EXITED", "FATAL"),
            180,
            interval=0.5,
            what="the store refusing the file",
        )
        first_state = status(system)["store"][0]
        time.sleep(5)  # long enough for a crash loop to show
        assert status(system)["store"][0] == first_state
        starts = system.log().count("spawned: 'store'")
        assert starts == 1, f"the store was started {starts} times"
        assert "is an SQLite database" in system.log() and "never overwrites" in system.log()
        assert hashlib.sha256(system.db.read_bytes()).hexdigest() == digest
        assert all(status(system)[p][0] == "RUNNING" for p in ("producer", "detector", "app"))

        # Security, on the same running system.
        sock = system.data / "supervisor.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0, oct(sock.stat().st_mode)
        assert stat.S_IMODE(system.data.stat().st_mode) == 0o700
        supervisord = psutil.Process(system.supervisord_pid())
        assert "supervisord" in " ".join(supervisord.cmdline())
        assert supervisord.net_connections(kind="inet") == [], "supervisord opened a TCP port"
        app = psutil.Process(status(system)["app"][1])
        listening = [c.laddr for c in app.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip in ("127.0.0.1", "::1") for a in listening), listening

        # The operator moves the file away and starts the store: everything arrives.
        system.db.rename(system.db.with_name("not-vigie.sqlite"))
        t0 = time.monotonic()
        system.ctl("start", "store")
        wait_for(lambda: ledger_lines(ledger) >= 1500, 120, what="the board's 1500 lines")
        wait_all_judged(system, system.db, 1500)
        recovery = time.monotonic() - t0
        lost, dup, _ = lost_and_duplicated(system.db, ledger)
        assert_exactly_once(system.db, ledger)
        assert system.stop() == 0
    assert hashlib.sha256((data / "not-vigie.sqlite").read_bytes()).hexdigest() == digest
    report(
        "foreign file at the database path",
        1,
        lost,
        dup,
        [recovery],
        note="store exits 3 once, not restarted; file untouched; recovery = `start store` after moving "
        "the file to everything stored",
    )
