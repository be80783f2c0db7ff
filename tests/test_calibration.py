"""Calibrated thresholds mean the same for every detector: 0.999 is about one alarm per thousand
normal readings, whatever the detector and whatever the sensor's shape."""

import numpy as np
import pytest

from lib.detect import detectors
from lib.detect.detectors.calibrated import Calibrated, calibration_rate

N = 30_000


def _normal_data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    t = np.arange(N)
    if kind == "gaussian":
        return 50 + rng.normal(0, 0.5, N)
    # a daily cycle of 1,440 readings (one a minute) and noise
    return 20 + 4 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.3, N)


# cusum's sums carry over from reading to reading, so its alarms come in runs and a 30,000-reading
# sample of them is too few independent runs for a factor-of-two check
CHECKED = sorted(n for n, cls in detectors.REGISTRY.items() if cls.calibrate_default and n not in ("cusum", "ensemble"))


@pytest.mark.parametrize("kind", ["gaussian", "cyclic"])
@pytest.mark.parametrize("name", CHECKED)
def test_false_alarm_rate_is_within_a_factor_of_two_of_the_threshold(name, kind):
    det, decision = detectors.build(name)
    assert isinstance(det, Calibrated) and decision.threshold == 0.999
    results = det.score_learn_many(list(_normal_data(kind)))
    scores = np.array([s for ready, s in results if ready])[2000:]  # once the memory has filled a little
    for threshold in (0.99, 0.999):
        rate = float(np.mean(scores > threshold))
        target = calibration_rate(threshold)
        assert target / 2 <= rate <= target * 2, f"{name} on {kind}: {rate:.5f} flagged at {threshold}"


def test_an_anomaly_is_not_learnt_as_normal():
    """A sensor that spikes 1% of the time: the spikes stay rare to the calibration (they are cut
    down to the protect level before joining its memory), so they stay flagged."""
    rng = np.random.default_rng(5)
    x = 50 + rng.normal(0, 0.5, 6000)
    spikes = rng.choice(np.arange(1000, 6000), 50, replace=False)
    x[spikes] *= 1.5
    det, decision = detectors.build("zscore")
    flagged = np.array([decision.state(r, s) == "anomaly" for r, s in det.score_learn_many(list(x))])
    assert flagged[spikes].mean() >= 0.95
    normal = np.ones(len(x), dtype=bool)
    normal[spikes] = False
    normal[:1000] = False
    assert flagged[normal].mean() <= 0.002


def test_the_original_programs_way_is_one_setting_away():
    det, decision = detectors.build("dbscan", {"calibrate": False})
    assert not isinstance(det, Calibrated) and decision.threshold == type(det).default_threshold
    with pytest.raises(ValueError, match="calibrate"):
        detectors.build("dbscan", {"calibrate": "yes"})


OWN_SCALE = sorted(n for n, cls in detectors.REGISTRY.items() if not cls.calibrate_default)


@pytest.mark.parametrize("kind", ["gaussian", "cyclic"])
@pytest.mark.parametrize("name", OWN_SCALE)
def test_a_detector_on_its_own_scale_alarms_rarely_on_normal_data(name, kind):
    """novelty and likelihood are not calibrated per sensor (their alarms grow rarer as they learn
    a sensor, which NAB rewards): at their own threshold they flag at most as many normal readings
    as calibrated 0.999 does."""
    assert OWN_SCALE == ["likelihood", "novelty"]
    det, decision = detectors.build(name)
    assert not isinstance(det, Calibrated) and decision.threshold == type(det).default_threshold
    results = det.score_learn_many(list(_normal_data(kind)))
    scores = np.array([s for ready, s in results if ready])[2000:]
    assert float(np.mean(scores > decision.threshold)) <= 0.001
