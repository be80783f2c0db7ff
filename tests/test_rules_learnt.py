"""The learnt rules of the default set: a silence measured in the sensor's own intervals, and a
stuck sensor measured against its own longest runs of identical readings."""

import numpy as np

from lib.config import load_config
from lib.detect.detection import Judge
from lib.detect.rules import STUCK_MIN, Rules, RuleState


def test_no_data_limit_follows_each_sensors_cadence():
    fast, slow = RuleState(Rules(no_data_factor=10)), RuleState(Rules(no_data_factor=10))
    assert fast.no_data_limit_s() == 0  # nothing learnt yet: no limit to apply
    fast.judge_columns(list(range(50)), [int(i * 0.5e6) for i in range(50)])  # twice a second
    slow.judge_columns(list(range(50)), [int(i * 60e6) for i in range(50)])  # once a minute
    assert fast.no_data_limit_s() == 5.0 and slow.no_data_limit_s() == 600.0
    assert RuleState(Rules(no_data_s=30, no_data_factor=10)).no_data_limit_s() == 30


def test_a_worker_tells_a_silence_after_ten_intervals():
    config = load_config(env={}, overrides={"detection": {"detectors": [], "rules": {"*": {"no_data_factor": 10}}}})
    judge = Judge(config)
    ts = [int(i * 0.5e6) for i in range(40)]
    judge.judge_sensors([("porte", [1.0] * 40, ts)])
    judge.note_last("porte", "s", 39, ts[-1])
    assert judge.silent(ts[-1] + int(4.9e6)) == []
    assert judge.silent(ts[-1] + int(5.1e6)) == [("porte", "s", 39, ts[-1])]


def _stuck_flags(values, batch=None):
    st = RuleState(Rules(stuck_factor=3))
    if batch is None:
        return np.array([st.judge(float(v))[0][1] == "anomaly" for v in values])
    out = []
    for lo in range(0, len(values), batch):
        codes, _ = st.judge_columns(values[lo : lo + batch])["rule:stuck"]
        out += [c == "a" for c in codes]
    return np.array(out)


def test_stuck_is_judged_against_the_sensors_own_runs():
    rng = np.random.default_rng(1)
    # a quantised sensor that often repeats a value up to 6 times, then holds still
    values = [0.0]
    while len(values) < 3000:
        values += [values[-1] + float(rng.choice([-1, 1]))] * int(rng.integers(1, 7))
    longest = 6
    stuck_at = len(values)
    values += [values[-1] + 1.0] * 40 + [0.0, 1.0] * 20
    flags = _stuck_flags(values)
    assert not flags[:stuck_at].any()  # its own repeats are normal
    first = stuck_at + max(STUCK_MIN, 3 * longest)  # over three times its longest run
    assert flags[first] and not flags[first - 1]
    assert (flags == _stuck_flags(values, batch=97)).all()  # batches change nothing
