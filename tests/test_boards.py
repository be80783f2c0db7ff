"""Several boards: `[serial] port` as a list, one producer program each, and each producer's status
file for the page; end to end, two simulated boards configured in a vigie.toml alone."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from serial.tools.list_ports_common import ListPortInfo

from lib.config import PROJECT_ROOT, ConfigError, load_config
from lib.ingest import status as st
from lib.ingest.boards import Board, boards, program_sections
from lib.ingest.serial_port import stable_path
from tests.serial_rig import Rig, expected
from tests.system import System, wait_for


def usb(device: str, vid=0x2341, description="Arduino Uno") -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.description = vid, 0x43, description
    return info


def config_with(*ports: str):
    return load_config(env={}, overrides={"serial": {"port": list(ports)}})


# -- the status files ---------------------------------------------------------------------------


def test_status_is_written_atomically_and_read_back(tmp_path):
    clock = iter(range(100, 200)).__next__
    w = st.StatusWriter(tmp_path, "ttyACM0", "/dev/ttyACM0", clock=lambda: float(clock()))
    w.set(st.WAITING, detail="no such port: /dev/ttyACM0")
    (s,) = st.read_statuses(tmp_path)
    assert (s.name, s.port, s.state, s.detail, s.pid, s.alive) == (
        "ttyACM0",
        "/dev/ttyACM0",
        st.WAITING,
        "no such port: /dev/ttyACM0",
        os.getpid(),
        True,
    )
    since = s.since
    w.set(st.CONNECTED, detail="")
    w.lines(5, at=123.5)  # counters wait for WRITE_EVERY_S (the fake clock moves 1 s a call)
    (s,) = st.read_statuses(tmp_path)
    assert (s.state, s.detail, s.lines_read, s.last_line_at) == (st.CONNECTED, "", 5, 123.5)
    assert s.since > since
    w.set(st.BUFFERING, buffered_lines=40)
    assert st.read_statuses(tmp_path)[0].buffered_lines == 40
    w.close()
    assert [(s.state, s.detail) for s in st.read_statuses(tmp_path)] == [(st.STOPPED, "")]
    assert [p.name for p in tmp_path.iterdir()] == ["producer-ttyACM0.json"], "no temporary file left"
    with pytest.raises(ValueError, match="unknown producer state"):
        w.set("dozing")


def test_a_dead_writer_and_a_broken_file_are_shown_as_such(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    st.status_path(tmp_path, "gone").write_text(
        json.dumps({"name": "gone", "port": "/dev/x", "state": st.CONNECTED, "since": 1.0, "pid": int(dead.stdout)})
    )
    st.status_path(tmp_path, "torn").write_text('{"name": "torn", "po')
    gone, torn = st.read_statuses(tmp_path)
    assert (gone.state, gone.alive) == (st.CONNECTED, False)
    assert (torn.name, torn.state, torn.alive) == ("torn", st.FAILED, False)
    assert "unreadable status file producer-torn.json" in torn.detail


def test_the_producer_reports_waiting_connected_reconnecting_and_stopped(tmp_path):
    """The real producer on a pseudo-terminal board that appears late and is unplugged once."""
    with Rig(tmp_path) as rig:
        link = rig.data / "run" / "arduino"
        status = st.StatusWriter(rig.data / "run", "arduino", str(link))
        rig.producer_thread(link, status=status)
        state = lambda: st.read_statuses(rig.data / "run")[0]  # noqa: E731
        wait_for(lambda: state().detail == f"no such port: {link}", 10, 0.05, what="the port looked for")
        assert state().state == st.WAITING
        board = rig.board()
        from lib.ingest.simulator import SignalModel, Unplug, load_scenario, scenario_ticks

        ticks = scenario_ticks(SignalModel(load_scenario(PROJECT_ROOT / "data/scenarios/demo.toml"), 1), 200)
        rig.play(board, ticks, tmp_path / "ledger", count=400, unplugs={200: Unplug(1.5)})
        wait_for(lambda: state().state == st.RECONNECTING, 30, 0.05, what="the unplug seen")
        wait_for(
            lambda: state().state == st.CONNECTED and state().lines_read == 400,
            30,
            0.1,
            what="connected again, every line counted",
        )
        assert state().last_line_at > time.time() - 30
    assert (state().state, state().lines_read) == (st.STOPPED, 400)


# -- [serial] port as a list --------------------------------------------------------------------


def test_port_takes_one_value_or_a_list_from_the_file_and_the_environment(tmp_path):
    toml = tmp_path / "v.toml"
    toml.write_text('[serial]\nport = "/dev/ttyACM0"\n')
    assert load_config(toml, env={}).serial.port == ("/dev/ttyACM0",)
    toml.write_text('[serial]\nport = ["sim", "sim:cellar"]\n')
    assert load_config(toml, env={}).serial.port == ("sim", "sim:cellar")
    assert load_config(env={"VIGIE_SERIAL_PORT": "/dev/ttyACM0,/dev/ttyUSB0"}).serial.port == (
        "/dev/ttyACM0",
        "/dev/ttyUSB0",
    )
    toml.write_text("[serial]\nport = []\n")
    with pytest.raises(ConfigError, match="port: expected at least one value"):
        load_config(toml, env={})


def test_entries_become_boards_and_auto_finds_every_board():
    cfg = config_with("sim", "sim:cellar", "/dev/ttyUSB0")
    assert boards(cfg, find=list) == [
        Board("sim", "arduino"),
        Board("sim:cellar", "cellar"),
        Board("/dev/ttyUSB0", "ttyUSB0"),
    ]
    assert boards(cfg, find=list)[1].scenario(cfg) == PROJECT_ROOT / "data/scenarios/cellar.toml"
    assert boards(cfg, find=list)[1].device(cfg) == str(cfg.run_dir / "cellar")
    found = [usb("/dev/ttyACM0"), usb("/dev/ttyUSB0", 0x1A86, "USB2.0-Serial"), usb("/dev/ttyACM1")]
    # Several boards: one producer each, a board listed by path is not read twice.
    assert [b.entry for b in boards(config_with("auto"), find=lambda: found)] == [
        "/dev/ttyACM0",
        "/dev/ttyUSB0",
        "/dev/ttyACM1",
    ]
    assert [b.name for b in boards(config_with("/dev/ttyUSB0", "auto"), find=lambda: found)] == [
        "ttyUSB0",
        "ttyACM0",
        "ttyACM1",
    ]
    # One board or none yet: one producer that finds the board itself (also after a replug).
    assert boards(config_with("auto"), find=lambda: found[:1]) == [Board("auto", "auto")]
    assert boards(config_with("auto"), find=list) == [Board("auto", "auto")]
    with pytest.raises(ConfigError, match="would both be called 'ttyACM0'"):
        boards(config_with("/dev/ttyACM0", "/dev/serial/ttyACM0"), find=list)


def test_a_board_is_named_by_its_by_id_link_when_udev_made_one(tmp_path):
    dev = tmp_path / "ttyACM0"
    dev.touch()
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-Arduino_Uno_7573-if00").symlink_to(dev)
    assert stable_path(str(dev), by_id) == str(by_id / "usb-Arduino_Uno_7573-if00")
    assert stable_path("/dev/ttyUSB7", by_id) == "/dev/ttyUSB7"
    assert stable_path("/dev/ttyUSB7", tmp_path / "none") == "/dev/ttyUSB7"


def test_program_sections_give_one_producer_per_board_and_a_simulator_per_simulated_one():
    parser = configparser.RawConfigParser()
    parser.read_string(program_sections([Board("sim", "arduino"), Board("/dev/odd 100%", "odd_100")], "/venv/python"))
    assert parser.sections() == ["program:producer-arduino", "program:simulator-arduino", "program:producer-odd_100"]
    assert parser["program:producer-odd_100"]["command"] == (
        "/venv/python -m workers.producer --port '/dev/odd 100%%' --name odd_100"
    )
    assert parser["program:simulator-arduino"]["command"] == "/venv/python -m workers.simulator --port sim"
    single = configparser.RawConfigParser()
    single.read_string(program_sections([Board("sim", "arduino")], "/venv/python"))
    assert single.sections() == ["program:producer", "program:simulator"], "one board keeps the plain names"


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_two_simulated_boards_from_vigie_toml_alone(tmp_path):
    """Two simulated boards on two pseudo-terminals, listed in the configuration file only: two
    producers and two simulators under supervisord, every line of both boards stored once and
    judged, and each board's state in its status file."""
    n = 300
    ledger = tmp_path / "ledger"
    conf = tmp_path / "vigie.toml"
    conf.write_text(
        f'[serial]\nport = ["sim", "sim:cellar"]\n'
        f'[simulator]\nrate = 100.0\ncount = {n}\nledger = "{ledger}"\n'
        f'scenario = "data/scenarios/spikes.toml"\n'
    )
    with System(tmp_path, {"VIGIE_CONFIG": str(conf)}) as system:
        count = lambda: (system.ask("judged_counts") or {}).get("dbscan", (0, 0))[0]  # noqa: E731
        wait_for(lambda: count() >= 2 * n, 120, what="both boards' readings judged")
        programs = dict(line.split()[:2] for line in system.ctl("status").splitlines() if line.strip())
        # a status file is rewritten at most once a second: its count can trail what was stored
        wait_for(
            lambda: sum(s.lines_read for s in st.read_statuses(system.data / "run")) >= 2 * n,
            15,
            what="both status files counting every line",
        )
        statuses = {s.name: s for s in st.read_statuses(system.data / "run")}
        told = subprocess.run(
            [sys.executable, "-m", "workers.status"],
            cwd=PROJECT_ROOT,
            env=system.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        rc = system.stop()
    assert told.returncode == 0 and "producer-cellar" in told.stdout, told.stdout + told.stderr
    assert "cellar                 connected" in told.stdout
    assert rc == 0, system.log()[-3000:]
    assert {
        p: programs.get(p) for p in ("producer-arduino", "producer-cellar", "simulator-arduino", "simulator-cellar")
    } == dict.fromkeys(("producer-arduino", "producer-cellar", "simulator-arduino", "simulator-cellar"), "RUNNING")
    assert {name: (s.state, s.lines_read, s.program, s.alive) for name, s in statuses.items()} == {
        "arduino": (st.CONNECTED, n, "producer-arduino", True),
        "cellar": (st.CONNECTED, n, "producer-cellar", True),
    }

    sessions = dict(system.query("SELECT port, session_id FROM sessions"))
    assert sorted(sessions) == [str(system.data / "run" / "arduino"), str(system.data / "run" / "cellar")]
    for name, path in (("arduino", ledger), ("cellar", tmp_path / "ledger.cellar")):
        good, bad = expected(path)
        assert sum(good.values()) == n and not bad
        stored = Counter(
            {
                (s, v): c
                for s, v, c in system.query(
                    "SELECT sensor, value, count(*) FROM readings WHERE session_id = ? GROUP BY ALL",
                    (sessions[str(system.data / "run" / name)],),
                )
            }
        )
        assert stored == good, f"board {name}: stored readings differ from its lines"
    assert sorted(s for (s,) in system.query("SELECT DISTINCT sensor FROM readings")) == [
        "co2",
        "humidite",
        "pression",
        "temperature",
    ]
    assert {s.name: s.state for s in st.read_statuses(system.data / "run")} == {
        "arduino": st.STOPPED,
        "cellar": st.STOPPED,
    }


def test_the_control_socket_credentials_match_the_supervisord_files():
    from lib.supervision import PASSWORD, USERNAME

    for name in ("supervisord.conf", "supervisord-kafka.conf"):
        parser = configparser.RawConfigParser()
        parser.read(PROJECT_ROOT / name)
        for section in ("unix_http_server", "supervisorctl"):
            assert (parser[section]["username"], parser[section]["password"]) == (USERNAME, PASSWORD), name


def test_make_status_says_the_system_is_not_running_and_what_each_board_did(tmp_path):
    run = tmp_path / "data" / "run"
    w = st.StatusWriter(run, "ttyACM0", "/dev/ttyACM0")
    w.set(st.PORT_BUSY, detail="/dev/ttyACM0 is held by minicom (pid 4242)")
    r = subprocess.run(
        [sys.executable, "-m", "workers.status"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(tmp_path / "data")),
    )
    assert r.returncode == 1, r.stderr
    assert f"Vigie is not running on {tmp_path / 'data'}" in r.stdout
    assert "ttyACM0                port busy - /dev/ttyACM0 is held by minicom (pid 4242)" in r.stdout
