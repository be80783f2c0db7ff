"""The sliding window's states: initializing while the 20-reading window fills, then normal or
anomaly for each detector, each with a score."""
import numpy as np
import pytest

from lib.config import load_config
from lib.detect.detection import Judge
from lib.detect.detectors.window import Window


def test_window_keeps_the_last_n_in_order():
    w = Window(3)
    for x in (1, 2, 3, 4, 5):
        w.push(x)
    assert list(w.values()) == [3, 4, 5]
    assert len(w) == 3 and w.full


def _judge_series(values, window=20):
    judge = Judge(load_config(env={}, overrides={"detection": {"window": window}}))
    return judge.judge_many("humidite", list(values))


@pytest.mark.parametrize("window", [5, 20])
def test_initializing_until_the_window_is_full(window):
    values = 50 + np.random.default_rng(1).normal(0, 0.3, 60)
    rows = _judge_series(values, window)
    for i, row in enumerate(rows):
        states = {name: state for name, state, _ in row}
        assert set(states) == {"dbscan", "iforest"}
        if i < window:
            assert set(states.values()) == {"initializing"}
            assert all(score is None for _, _, score in row)
        else:
            assert set(states.values()) <= {"normal", "anomaly"}
            assert all(0.0 <= score <= 1.0 for _, _, score in row)


def test_a_spike_is_an_anomaly_for_both_and_its_neighbours_are_not():
    values = list(50 + np.random.default_rng(2).normal(0, 0.3, 40))
    values[30] = 60.0
    rows = _judge_series(values)
    spike = {name: (state, score) for name, state, score in rows[30]}
    assert spike["dbscan"][0] == "anomaly" and spike["iforest"][0] == "anomaly"
    for i in (28, 29):
        before = {name: score for name, _, score in rows[i]}
        assert before["dbscan"] < spike["dbscan"][1] and before["iforest"] < spike["iforest"][1]


def test_warm_from_history_skips_initializing():
    config = load_config(env={})
    history = list(50 + np.random.default_rng(3).normal(0, 0.3, 20))
    judge = Judge(config)
    judge.warm("humidite", history)
    row = judge.judge_many("humidite", [50.1])[0]
    assert {state for _, state, _ in row} <= {"normal", "anomaly"}
