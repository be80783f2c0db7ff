"""The sliding window's states: initializing while the 20-reading window fills (and, calibrated,
while the detector's own scores fill the calibration's memory), then normal or anomaly for each
detector, each with a score."""

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


SEED_WAY = {"dbscan": {"calibrate": False}, "iforest": {"calibrate": False}}


def _judge(window=20, params=None):
    overrides = {
        "detection": {"window": window, "detectors": ["dbscan", "iforest"], "params": params or {}, "rules": {}}
    }
    return Judge(load_config(env={}, overrides=overrides))


def _judge_series(values, window=20, params=None):
    return _judge(window, params).judge_many("humidite", list(values))


@pytest.mark.parametrize("window, params, warmup", [(5, SEED_WAY, 5), (20, SEED_WAY, 20), (20, None, 220)])
def test_initializing_until_the_window_is_full(window, params, warmup):
    """The original program's way (raw scores) judges once the window is full; calibrated, a
    detector also waits for 200 of its own scores on this sensor."""
    values = 50 + np.random.default_rng(1).normal(0, 0.3, warmup + 40)
    rows = _judge_series(values, window, params)
    for i, row in enumerate(rows):
        states = {name: state for name, state, _ in row}
        assert set(states) == {"dbscan", "iforest"}
        if i < warmup:
            assert set(states.values()) == {"initializing"}
            assert all(score is None for _, _, score in row)
        else:
            assert set(states.values()) <= {"normal", "anomaly"}
            assert all(0.0 <= score <= 1.0 for _, _, score in row)


@pytest.mark.parametrize("params", [SEED_WAY, None])
def test_a_spike_is_an_anomaly_for_both_and_its_neighbours_are_not(params):
    values = list(50 + np.random.default_rng(2).normal(0, 0.3, 400))
    values[330] = 60.0
    rows = _judge_series(values, params=params)
    spike = {name: (state, score) for name, state, score in rows[330]}
    assert spike["dbscan"][0] == "anomaly" and spike["iforest"][0] == "anomaly"
    for i in (328, 329, 331, 332):
        other = {name: (state, score) for name, state, score in rows[i]}
        assert other["dbscan"][0] == "normal" and other["iforest"][0] == "normal"
        assert other["dbscan"][1] < spike["dbscan"][1] and other["iforest"][1] < spike["iforest"][1]


def test_warm_from_history_skips_initializing():
    judge = _judge()
    history = list(50 + np.random.default_rng(3).normal(0, 0.3, judge.history_needed("humidite")))
    judge.warm("humidite", history)
    row = judge.judge_many("humidite", [50.1])[0]
    assert {state for _, state, _ in row} <= {"normal", "anomaly"}
