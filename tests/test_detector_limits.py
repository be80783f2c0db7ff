"""Readings near the float limit: every registered detector stays finite and flags the jump.
A sensor alternating between +-1.7e308 used to be judged normal every time: the robust scale
overflowed to inf, and a nan score compares as "not above the threshold"."""

import numpy as np
import pytest

from lib.detect import detectors
from lib.detect.detectors import REGISTRY

HUGE = 1.7e308


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_scores_stay_finite_and_the_jump_to_the_float_limit_is_flagged(name):
    det, decision = detectors.build(name)
    rng = np.random.default_rng(3)
    normal = list(20 + rng.normal(0, 0.5, det.warmup + 200))
    det.learn_many(normal)
    assert det.ready
    huge = [HUGE if i % 2 == 0 else -HUGE for i in range(50)]
    results = det.score_learn_many(huge + normal[:100])
    scores = np.array([s for _, s in results])
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert decision.state(True, scores[0]) == "anomaly"
