"""The flag sits on the anomalous reading itself, never on its neighbour: every registered
detector, with its default decision, flags a spike when it arrives and not the reading after
(a detector forecasting from the previous reading used to flag the reading after a spike)."""

import numpy as np
import pytest

from lib.detect import detectors
from lib.detect.detectors import REGISTRY


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_flag_lands_on_the_spike_not_its_neighbour(name):
    det, decision = detectors.build(name)
    rng = np.random.default_rng(8)
    start = det.warmup + 800
    x = 20 + 0.5 * np.sin(np.arange(start + 60) / 40) + rng.normal(0, 0.2, start + 60)
    x[start] += 15.0
    flags = [decision.state(r, s) == "anomaly" for r, s in det.score_learn_many(list(x))]
    assert flags[start], f"{name} missed the spike"
    assert not flags[start + 1], f"{name} flagged the reading after the spike"
    assert not any(flags[start - 5 : start]), f"{name} flagged before the spike"
