"""REGISTRY: one name per detector class (lib.detect.detectors builds through it). A module of its
own so that the ensemble, which builds its members through it, imports it without a cycle; the
ensemble itself is registered by lib.detect.detectors."""

from __future__ import annotations

from lib.detect.detectors.base import Detector
from lib.detect.detectors.cusum import CUSUMDetector
from lib.detect.detectors.dbscan import DBSCANDetector
from lib.detect.detectors.iforest import IsolationForestDetector
from lib.detect.detectors.likelihood import LikelihoodDetector
from lib.detect.detectors.lof import LOFDetector
from lib.detect.detectors.novelty import NoveltyDetector
from lib.detect.detectors.zscore import RobustZScoreDetector

REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        DBSCANDetector,
        IsolationForestDetector,
        RobustZScoreDetector,
        CUSUMDetector,
        LOFDetector,
        LikelihoodDetector,
        NoveltyDetector,
    )
}
