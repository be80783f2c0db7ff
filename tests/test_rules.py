"""Threshold rules: range, rate, stuck and no-data, per sensor with "*" defaults, and a bad
rule named at start-up."""

import pytest

from lib.config import ConfigError, load_config
from lib.detect.detection import Judge, check_detection_config, silence_messages
from lib.detect.rules import Rules, RuleState, rules_for
from lib.messages import EVENTS, STATES
from lib.states import STATE_CODES


def _config(rules, **det):
    return load_config(env={}, overrides={"detection": {"rules": rules, **det}})


def test_defaults_then_sensor_overrides():
    cfg = _config({"*": {"max": 100, "no_data_s": 30}, "humidite": {"min": 0, "max": 90}})
    assert rules_for(cfg, "humidite") == Rules(min=0, max=90, no_data_s=30)
    assert rules_for(cfg, "temperature") == Rules(max=100, no_data_s=30)


@pytest.mark.parametrize(
    "rules, named",
    [
        ({"*": {"maxx": 1}}, "maxx"),
        ({"humidite": {"stuck_n": 2.5}}, "stuck_n"),
        ({"humidite": {"min": 5, "max": 1}}, "min"),
        ({"*": {"no_data_s": -1}}, "no_data_s"),
        ({"*": {"max": "high"}}, "max"),
    ],
)
def test_bad_rules_stop_start_up_naming_the_key(rules, named):
    with pytest.raises(ConfigError, match=named):
        check_detection_config(_config(rules))


@pytest.mark.parametrize(
    "rules, values, ts, expected",
    [
        (
            Rules(min=0, max=10),
            [5, 11, -1, 10],
            None,
            [("rule:range", "normal"), ("rule:range", "anomaly"), ("rule:range", "anomaly"), ("rule:range", "normal")],
        ),
        (
            Rules(max_rate=2.0),
            [1, 2, 10, 11],
            [0, 1_000_000, 2_000_000, 2_500_000],
            [("rule:rate", "initializing"), ("rule:rate", "normal"), ("rule:rate", "anomaly"), ("rule:rate", "normal")],
        ),
        (
            Rules(max_rate=2.0),
            [1, 2, 3],
            [0, 100_000, 200_000],  # 1 unit in 0.1 s is 10/s
            [("rule:rate", "initializing"), ("rule:rate", "anomaly"), ("rule:rate", "anomaly")],
        ),
        (
            Rules(stuck_n=3),
            [1, 2, 2, 2, 2, 3],
            None,
            [("rule:stuck", s) for s in ("normal", "normal", "normal", "anomaly", "anomaly", "normal")],
        ),
    ],
)
def test_rule_table(rules, values, ts, expected):
    st = RuleState(rules)
    got = [(row[0][0], row[0][1]) for row in [st.judge(v, t) for v, t in zip(values, ts or [None] * len(values))]]
    assert got == expected


@pytest.mark.parametrize("with_ts", [True, False])
def test_rules_column_by_column_equal_reading_by_reading(with_ts):
    """The worker judges a poll's readings of a sensor in one numpy pass (`judge_columns`); over
    runs of equal values, steps, clock jumps and batch edges it must say what `judge` says."""
    import numpy as np

    rng = np.random.default_rng(4)
    values = np.round(rng.normal(50, 2, 400) * (rng.random(400) < 0.7), 0)  # repeats and jumps
    values[100:140] = 50.0  # a long stuck run
    ts = np.cumsum(rng.integers(0, 400_000, 400)).tolist() if with_ts else None  # 0 s steps too
    rules = Rules(min=0, max=55, max_rate=6.0, stuck_n=5)
    one, cols = RuleState(rules), RuleState(rules)
    want = [one.judge(float(v), t) for v, t in zip(values, ts or [None] * len(values))]
    got: list = []
    for start in range(0, len(values), 37):
        part = cols.judge_columns(values[start : start + 37], ts[start : start + 37] if ts else None)
        n = len(values[start : start + 37])
        got += [[(name, STATE_CODES[part[name][0][i]], part[name][1][i]) for name in part] for i in range(n)]
    assert got == want
    assert (one.prev, one.run, one.prev_ts) == (cols.prev, cols.run, cols.prev_ts)


def test_rules_ride_with_the_detectors_and_survive_a_restart():
    cfg = _config({"*": {"stuck_n": 3, "max": 60}}, detectors=["zscore"])
    judge = Judge(cfg)
    rows = judge.judge_many("humidite", [50.0, 50.0, 70.0])
    assert [n for n, _, _ in rows[2]] == ["zscore", "rule:range", "rule:stuck"]
    assert dict((n, s) for n, s, _ in rows[2])["rule:range"] == "anomaly"
    again = Judge(cfg)
    again.warm("humidite", [49.0, 50.0, 50.0])
    row = again.judge_many("humidite", [50.0])[0]
    assert dict((n, s) for n, s, _ in row)["rule:stuck"] == "anomaly"


def test_no_data_is_told_once_per_silence_on_the_last_reading():
    cfg = _config({"*": {"no_data_s": 5}}, detectors=["zscore"])
    judge = Judge(cfg)
    judge.judge_many("humidite", [50.0])
    judge.note_last("humidite", "s1", 7, 1_000_000)
    assert silence_messages(judge, 5_000_000) == []
    msgs = silence_messages(judge, 6_500_000)
    assert [m.json() for m in msgs if m.topic == STATES] == [
        {
            "session": "s1",
            "seq": 7,
            "sensor": "humidite",
            "ts_us": 1_000_000,
            "states": [["rule:no_data", "anomaly", 1.0]],
        }
    ]
    # the silence opens the sensor's anomaly event (lib.detect.events), keyed on the same reading
    assert [m.json()["id"] for m in msgs if m.topic == EVENTS] == ["s1:humidite:7"]
    assert silence_messages(judge, 9_000_000) == []  # once per silence
    judge.note_last("humidite", "s1", 8, 9_000_000)  # a reading ends the silence
    assert len([m for m in silence_messages(judge, 20_000_000) if m.topic == STATES]) == 1


def test_a_sensor_handed_to_another_worker_is_not_silent():
    class Consumer:
        def owned_sensors(self):
            return {"temperature"}

    cfg = _config({"*": {"no_data_s": 5}}, detectors=["zscore"])
    judge = Judge(cfg)
    judge.note_last("humidite", "s1", 7, 1_000_000)
    assert silence_messages(judge, 60_000_000, Consumer()) == []
    assert len([m for m in silence_messages(judge, 60_000_000) if m.topic == STATES]) == 1
