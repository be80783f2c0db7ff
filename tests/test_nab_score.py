"""The NAB-style score against hand-worked cases and a plain row-by-row restatement of NAB's
published rules (numenta/NAB sweeper: windows, scaled sigmoid, standard profile, probation)."""

import math

import numpy as np
import pytest

from lib.detect.nab_score import FileScorer, corpus_score, probationary_length, scaled_sigmoid

MAX_TP = scaled_sigmoid(-1.0)


def test_probation_is_15_percent_capped_at_750():
    assert probationary_length(100) == 15
    assert probationary_length(10_000) == 750


@pytest.mark.parametrize(
    "detect_at, expected",
    [
        (50, 1.0),  # left edge of the window: all of A_TP
        (59, (2 / (1 + math.exp(-0.5)) - 1) / MAX_TP),  # right edge: little
        (None, -1.0),  # missed: A_FN
    ],
)
def test_one_window(detect_at, expected):
    fs = FileScorer("f", 100, [(50, 59)])
    scores = np.zeros(100)
    if detect_at is not None:
        scores[detect_at] = 1.0
    assert fs.score(scores, 0.5)["raw"] == pytest.approx(expected)


def test_false_positives_cost_by_distance_from_the_previous_window():
    fs = FileScorer("f", 100, [(50, 59)])
    scores = np.zeros(100)
    scores[[20, 60, 95]] = 1.0  # before any window; just after; far after
    raw = fs.score(scores, 0.5)["raw"]
    assert raw == pytest.approx(-1.0 - 0.11 + 0.11 * scaled_sigmoid(1 / 9) - 0.11)
    scores[5] = 1.0  # probationary rows do not count
    assert fs.score(scores, 0.5)["raw"] == pytest.approx(raw)


def _nab_rows(n, windows, scores, threshold):
    """NAB's rules restated row by row, as the sweeper applies them."""
    prob = probationary_length(n)
    total, best = 0.0, {}
    prev_right = prev_width = None
    inside = {}
    for k, (a, b) in enumerate(windows):
        for i in range(a, b + 1):
            inside[i] = (k, a, b)
    for i in range(n):
        if i in inside:
            k, a, b = inside[i]
            w = scaled_sigmoid(-(b - i + 1) / (b - a + 1)) / MAX_TP
            if i >= prob:
                best.setdefault(k, -1.0)
                if scores[i] >= threshold:
                    best[k] = max(best[k], w)
            if i == b:
                prev_right, prev_width = b, b - a + 1
        elif i >= prob and scores[i] >= threshold:
            pos = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            total += 0.11 * scaled_sigmoid(pos)
    return total + sum(best.values())


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_row_by_row_rules(seed):
    rng = np.random.default_rng(seed)
    n = 400
    windows = [(30, 49), (150, 189), (300, 319)]
    scores = rng.random(n) ** 3
    fs = FileScorer("f", n, windows)
    for th in (0.2, 0.5, 0.9, 0.99):
        assert fs.score(scores, th)["raw"] == pytest.approx(_nab_rows(n, windows, scores, th))


def test_corpus_normalises_between_null_and_perfect():
    fs = FileScorer("f", 200, [(100, 119)])
    perfect = np.zeros(200)
    perfect[100] = 1.0
    assert corpus_score([(fs, perfect)])["score"] == pytest.approx(100.0)
    assert corpus_score([(fs, np.zeros(200))], threshold=0.5)["score"] == pytest.approx(0.0)
