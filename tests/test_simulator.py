"""The simulated board: scenarios, every anomaly kind with its truth, determinism, NAB replay
through the real producer, the worker's command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lib.config import PROJECT_ROOT
from lib.ingest.protocol import Parsed, Rejected, parse_line
from lib.ingest.simulator import (
    ANOMALY_KINDS,
    ScenarioError,
    SignalModel,
    load_scenario,
    nab_windows,
    replay_ticks,
    scenario_from_dict,
    scenario_ticks,
)
from tests.serial_rig import Rig, expected
from tests.system import wait_for

SCENARIOS = sorted((PROJECT_ROOT / "data/scenarios").glob("*.toml"))
NAB = PROJECT_ROOT / "data/nab/artificialWithAnomaly/art_daily_jumpsup.csv"


def play(scenario, seed: int, n: int, rate: float = 60.0):
    ticks = scenario_ticks(SignalModel(scenario, seed), rate)
    return [next(ticks) for _ in range(n)]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_load_and_play(path):
    scenario = load_scenario(path)
    ticks = play(scenario, 1, 500, scenario.rate or 20.0)
    lines = [t.line for t in ticks if t.line is not None]
    assert len(lines) > 250
    sensors = {s.name for s in scenario.sensors}
    assert {parse_line(line).sensor for line in lines if isinstance(parse_line(line), Parsed)} <= sensors


def test_every_kind_scenario_injects_every_kind_with_truth():
    scenario = load_scenario(PROJECT_ROOT / "data/scenarios/every-kind.toml")
    ticks = play(scenario, 42, 60 * 60)  # a minute at 60 lines/s
    kinds = Counter(inj.kind for t in ticks for inj in t.started)
    assert set(kinds) == set(ANOMALY_KINDS), kinds
    for t in ticks:
        for inj in t.started:
            assert inj.start == t.due_s and inj.end >= inj.start
            assert inj.sensor in {s.name for s in scenario.sensors}


def test_each_kind_changes_the_signal_the_way_its_name_says():
    quiet = {"sensors": {"s": {"base": 50.0, "amplitude": 0.0, "noise": 0.1}}, "quiet_s": 1.0}

    def values(kind, **extra):
        raw = dict(quiet, anomalies=[{"kind": kind, "sensor": "s", "every_s": 4.0, "magnitude": 50, **extra}])
        scenario = scenario_from_dict(raw)
        ticks = play(scenario, 3, 1000, rate=100.0)
        start = next(i for i, t in enumerate(ticks) if t.started)
        return [parse_line(t.line) if t.line else None for t in ticks], start

    out, i = values("spike")
    assert out[i].value > 53 and all(abs(p.value - 50) < 1 for p in out[i + 1 : i + 20])
    out, i = values("dip")
    assert out[i].value < 47
    out, i = values("level_shift", duration_s=1.0)
    assert all(p.value > 53 for p in out[i : i + 100])
    out, i = values("drift", duration_s=2.0)
    assert out[i + 190].value - out[i + 10].value > 4
    out, i = values("flatline", duration_s=1.0)
    assert len({p.value for p in out[i : i + 100]}) == 1
    out, i = values("noise", duration_s=1.0)
    assert max(abs(p.value - 50) for p in out[i : i + 100]) > 5
    out, i = values("dropout", duration_s=1.0)
    assert out[i : i + 100] == [None] * 100 and out[i + 101] is not None
    out, i = values("malformed")
    assert isinstance(out[i], Rejected) and isinstance(out[i + 1], Parsed)


def test_same_seed_same_lines_other_seed_other_lines():
    scenario = load_scenario(PROJECT_ROOT / "data/scenarios/every-kind.toml")
    a, b, c = (play(scenario, seed, 3000) for seed in (7, 7, 8))
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "no [sensors"),
        ({"sensors": {"bad name": {}}}, "bad sensor name"),
        ({"sensors": {"s": {"bogus": 1}}}, "unknown key"),
        ({"sensors": {"s": {"base": "high"}}}, "base must be a finite number"),
        ({"sensors": {"s": {}}, "anomalies": [{"kind": "meteor", "sensor": "s"}]}, "unknown kind"),
        ({"sensors": {"s": {}}, "anomalies": [{"kind": "spike", "sensor": "t"}]}, "no sensor 't'"),
        ({"sensors": {"s": {}}, "rate": -1}, "rate must be"),
        ({"sensors": {"s": {"adc_bits": 10}}}, "adc_bits needs adc_max above adc_min"),
        ({"sensors": {"s": {"setpoints": [1.0], "setpoint_every_s": 60}}}, "needs two setpoints"),
        ({"sensors": {"s": {"setpoints": [1.0, "high"]}}}, "setpoints must be a list of finite numbers"),
        ({"sensors": {"s": {"drift_s": 0}}}, "drift_s out of range"),
        ({"sensors": {"s": {}}, "spacing_s": -1}, "spacing_s must be"),
    ],
)
def test_bad_scenarios_say_what_is_wrong(raw, message):
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[")):
        scenario_from_dict(raw)


def test_replay_paces_by_timestamps_or_rate_and_labels_nab_windows():
    rows = NAB.read_text().splitlines()[1:]
    ticks = list(replay_ticks(NAB, "jumps", speed=300.0))
    assert len(ticks) == len(rows)
    assert [t.line for t in ticks[:2]] == [f"jumps!{r.split(',')[1]}\r\n".encode() for r in rows[:2]]
    assert ticks[1].due_s == pytest.approx(1.0)  # 5 minutes apart, played 300 times faster
    windows = [inj for t in ticks for inj in t.started]
    assert len(windows) == len(nab_windows(NAB)) == 1 and windows[0].kind == "nab_window"
    assert windows[0].end > windows[0].start
    fast = list(replay_ticks(NAB, "jumps", rate=2000.0))
    assert fast[2000].due_s == pytest.approx(1.0)
    with pytest.raises(ScenarioError, match="bad sensor name"):
        next(replay_ticks(NAB, "bad name"))


def run_worker(module: str, *args: str, data: Path, timeout: float = 30, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(data), **env),
    )


def test_replay_flows_through_the_real_producer_into_the_store(tmp_path):
    """The simulator worker replays a NAB file at 2,000 lines/s; the producer and the store keep
    every value, in order, and the labelled window lands in the truth table."""
    rig = Rig(tmp_path)
    sim = subprocess.Popen(
        [sys.executable, "-m", "workers.simulator", "--replay", str(NAB), "--rate", "2000", "--sensor", "jumps"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(rig.data)),
    )
    try:
        link = rig.data / "run" / "arduino"
        wait_for(link.exists, 30, 0.05, what="the simulator's port")
        producer = rig.producer_thread(link, ack=True)
        rows = NAB.read_text().splitlines()[1:]
        wait_for(lambda: producer.counts["readings"] >= len(rows), 30, 0.1, what="every row")
    finally:
        rig.stop_all()
        sim.terminate()
        out = sim.communicate(timeout=30)[0]
    assert sim.returncode == 0, out
    rig.store()
    stored = [v for (v,) in rig.query("SELECT value FROM readings WHERE sensor = 'jumps' ORDER BY seq")]
    assert stored == [float(r.split(",")[1]) for r in rows]
    assert rig.query("SELECT kind, count(*) FROM truth GROUP BY 1") == [("nab_window", 1)]


def test_simulator_worker_rejects_a_bad_scenario_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[sensors.s]\nbase = "x"\n')
    r = run_worker("workers.simulator", "--scenario", str(bad), data=tmp_path)
    assert r.returncode == 2
    assert "base must be a finite number" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "/etc/hostname"], "not a serial device"),
        (["--baud", "10"], "baud rate 10 is not a rate"),
        (["--baud", "0"], "must be positive"),
    ],
)
def test_producer_bad_settings_give_one_clear_line(tmp_path, args, message):
    r = run_worker("workers.producer", *args, data=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_producer_waits_for_a_port_that_is_not_there_yet_and_says_so(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.producer", "--port", str(tmp_path / "ttyACM9")],
        cwd=PROJECT_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(tmp_path)),
    )
    try:
        line = proc.stderr.readline()
        while "no such port" not in line and line:
            line = proc.stderr.readline()
        assert f"no such port: {tmp_path / 'ttyACM9'}; waiting for it" in line
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
    assert "Traceback" not in proc.stderr.read()


def test_every_kinds_truth_and_malformed_lines_reach_the_store_through_the_workers(tmp_path):
    """The simulator worker plays every kind often; the producer and the store file the lines,
    the rejects and the truth: one truth row per injection, every kind present."""
    scenario = tmp_path / "often.toml"
    anomalies = "\n".join(
        f'[[anomalies]]\nkind = "{k}"\nsensor = "*"\nevery_s = 0.3\nduration_s = 0.05\n' for k in ANOMALY_KINDS
    )
    scenario.write_text(f"quiet_s = 0\n[sensors.a]\n[sensors.b]\nbase = 20.0\n{anomalies}")
    rig = Rig(tmp_path)
    ledger = tmp_path / "ledger"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.simulator",
            "--scenario",
            str(scenario),
            "--rate",
            "2000",
            "--count",
            "4000",
            "--seed",
            "11",
            "--ledger",
            str(ledger),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(rig.data)),
    )
    try:
        link = rig.data / "run" / "arduino"
        wait_for(link.exists, 30, 0.05, what="the simulator's port")
        producer = rig.producer_thread(link, ack=True)
        wait_for(lambda: producer.counts["readings"] + producer.counts["rejects"] >= 4000, 30, 0.1, what="4000 lines")
    finally:
        rig.stop_all()
        sim.terminate()
        out = sim.communicate(timeout=30)[0]
    assert sim.returncode == 0, out
    rig.store()
    truth = dict(rig.query("SELECT kind, count(*) FROM truth GROUP BY 1"))
    assert set(truth) == set(ANOMALY_KINDS), truth
    assert rig.query("SELECT count(*) FROM truth WHERE ended_at < started_at") == [(0,)]
    (n_rejects,) = rig.query("SELECT count(*) FROM rejects")[0]
    assert n_rejects == sum(expected(ledger)[1].values()) > 0
    outside = rig.query("""SELECT count(*) FROM rejects r WHERE NOT EXISTS (SELECT 1 FROM truth t
        WHERE t.kind = 'malformed' AND r.ts BETWEEN t.started_at - INTERVAL 1 SECOND AND t.ended_at + INTERVAL 1
        SECOND)""")
    assert outside == [(0,)], "a reject outside every malformed injection"
    ((lo, hi),) = rig.query("SELECT min(ts), max(ts) FROM readings")
    ((t_lo, t_hi),) = rig.query("SELECT min(started_at), max(started_at) FROM truth")
    assert lo.timestamp() - 5 < t_lo.timestamp() and t_hi.timestamp() < hi.timestamp() + 5, (
        "truth on the readings' clock"
    )


def test_realism_options_quantise_drift_and_move_the_set_point_without_truth():
    spec = {
        "base": 20.0,
        "amplitude": 1.0,
        "period_s": 60,
        "harmonic": 0.3,
        "noise": 0.2,
        "drift_sd": 0.5,
        "drift_s": 30,
        "setpoints": [0.0, 5.0],
        "setpoint_every_s": 20,
        "setpoint_ramp_s": 2,
        "adc_bits": 10,
        "adc_min": 0.0,
        "adc_max": 110.0,
        "decimals": 4,
    }
    scenario = scenario_from_dict({"sensors": {"t": spec}})
    model = SignalModel(scenario, seed=4)
    ticks = scenario_ticks(model, 10.0)
    played = [next(ticks) for _ in range(2000)]  # 200 s at 10 readings/s
    values = [parse_line(t.line).value for t in played]
    step = 110.0 / 1023
    # every reading is one of the converter's codes, mapped to units
    assert all(abs(v / step - round(v / step)) < 1e-3 for v in values)
    assert len(set(values)) > 30
    # the set-point moves between its two levels several times: normal operation, no truth
    changes = list(model.setpoint_changes)
    assert len(changes) >= 4 and {(c.old, c.new) for c in changes} == {(0.0, 5.0), (5.0, 0.0)}
    assert not any(t.started for t in played)
    # the level follows each change: the mean of the 5 s after one (ramp done) differs by about the step
    for c in changes[:-1]:
        before = [v for t, v in zip(played, values) if c.at - 6 <= t.due_s < c.at]
        after = [v for t, v in zip(played, values) if c.at + 10 <= t.due_s < c.at + 16]
        assert abs((sum(after) / len(after) - sum(before) / len(before)) - (c.new - c.old)) < 2.5
    # the same options with the realism off give the same noise and schedule as a plain scenario
    plain = scenario_from_dict({"sensors": {"t": {"base": 20.0}}, "anomalies": [{"kind": "spike", "sensor": "t"}]})
    off = scenario_from_dict(
        {
            "sensors": {"t": {"base": 20.0, "drift_sd": 0.0, "setpoints": [0.0]}},
            "anomalies": [{"kind": "spike", "sensor": "t"}],
        }
    )
    assert play(plain, 9, 500) == play(off, 9, 500)


def test_spacing_keeps_injections_on_a_sensor_apart():
    raw = {
        "sensors": {"a": {}, "b": {}},
        "quiet_s": 0,
        "spacing_s": 5.0,
        "anomalies": [{"kind": k, "sensor": "*", "every_s": 1.0, "duration_s": 2.0} for k in ("level_shift", "noise")],
    }
    ticks = play(scenario_from_dict(raw), 3, 6000, rate=20.0)
    started = [inj for t in ticks for inj in t.started]
    assert len(started) > 40
    for name in ("a", "b"):
        mine = sorted((i.start, i.end) for i in started if i.sensor == name)
        assert all(nxt[0] >= prev[1] + 5.0 for prev, nxt in zip(mine, mine[1:]))
