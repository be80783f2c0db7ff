"""The original program's algorithms (docs/origins.md) done fast must stay the same algorithms:
DBSCAN labels and IsolationForest scores equal scikit-learn's on the same windows."""

import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from lib.detect.detectors.dbscan import DBSCANDetector, new_point_distance, new_point_distances
from lib.detect.detectors.iforest import IsolationForestDetector, sampled_path_scores
from lib.detect.detectors.lof import lof_scores
from lib.detect.detectors.window import robust_scale


@pytest.mark.parametrize("seed", range(40))
def test_dbscan_noise_label_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    window = np.round(rng.normal(0, 1, 20), 2)
    x = float(rng.normal(0, 3))
    eps, min_samples = 0.5, 4
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit(np.append(window, x).reshape(-1, 1)).labels_
    ours_one = new_point_distance(window, x, eps, min_samples)
    ours_many = new_point_distances(window[None, :], np.array([x]), eps, min_samples)[0]
    assert (labels[-1] == -1) == (ours_one > eps) == (ours_many > eps)


def test_dbscan_detector_flags_what_scikit_learn_calls_noise():
    rng = np.random.default_rng(7)
    xs = 50 + rng.normal(0, 1, 400)
    xs[::37] += 6
    det = DBSCANDetector(window=20)
    rows = det.score_learn_many(list(xs))
    for i in range(20, len(xs)):
        w = xs[i - 20 : i]
        c, s = robust_scale(w)
        pts = (np.append(w, xs[i]) - c) / s
        noise = DBSCAN(eps=1.0, min_samples=4).fit(pts.reshape(-1, 1)).labels_[-1] == -1
        assert noise == (rows[i][1] > 0.5), i


@pytest.mark.parametrize("x", [50.0, 53.0, 56.0, 65.0, 42.0])
def test_iforest_sampled_paths_score_like_scikit_learn_forests(x):
    """The default method draws only the new reading's path through each tree: over many forests
    its mean score must be scikit-learn's (fitted on the window and the reading, score the reading)."""
    window = np.random.default_rng(0).normal(50, 3, 20)
    fifo = np.append(window, x)
    sk = np.mean(
        [
            -IsolationForest(n_estimators=20, random_state=s).fit(fifo.reshape(-1, 1)).score_samples([[x]])[0]
            for s in range(60)
        ]
    )
    ours = np.mean([sampled_path_scores(fifo[None, :], np.array([x]), 20, s, 0)[0] for s in range(1200)])
    # 1,200 trees of scikit-learn's against 24,000 of ours: the standard error is about 0.004
    assert ours == pytest.approx(sk, abs=0.015)


def test_iforest_sampled_paths_depend_on_the_reading_not_the_batch():
    xs = list(50 + np.random.default_rng(5).normal(0, 1, 80))
    a, b = IsolationForestDetector(), IsolationForestDetector()
    one = [a.score_learn_many([x])[0] for x in xs]
    assert b.score_learn_many(xs) == one


def test_lof_matches_scikit_learn_novelty_on_distinct_values():
    rng = np.random.default_rng(3)
    for _ in range(10):
        w = rng.normal(0, 1, 20)
        x = float(rng.normal(0, 2))
        c, s = robust_scale(w)
        lof = LocalOutlierFactor(n_neighbors=5, novelty=True).fit(((w - c) / s).reshape(-1, 1))
        want = -lof.score_samples([[(x - c) / s]])[0]
        got = lof_scores(w[None, :], np.array([x]), 5)[0]
        assert got == pytest.approx(max(0.0, 1 - 1 / want), abs=1e-6)
