"""Calibrated scores: a detector's raw score turned into how rare it is for this sensor.

Raw scores mean different things per detector (DBSCAN's distance past `eps`, an isolation path
length, a squashed z) and per sensor (a jumpy sensor scores high all day). `Calibrated` wraps any
detector and replaces its raw score `s` by `1 - P(S >= s)`, where `S` is the detector's own raw
score on this sensor's recent readings: a threshold of 0.999 then reads "about one alarm per
thousand normal readings" for every detector and every sensor.

Raw scores in [0, 1] are squashed near 1 (`z / (z + 3)`, `1 - eps / 2d`), which hides how far
apart two extreme readings are, so the tail is modelled on `-log(1 - s)`, which undoes that
squashing for the usual shapes. P comes from the last `memory` such scores: below their `tail` quantile `u` it is the
empirical
share of scores at or above `s`; above `u` the excesses `s - u` follow a generalised Pareto tail
(fitted on quantiles of the excesses; peaks-over-threshold, as in SPOT, Siffer et al. 2017), so
rates rarer than the memory holds (0.99999 from 5,000 scores) are extrapolated rather than read
off the few largest scores. The fit is refreshed every `refresh` readings.

A reading is scored before its raw score joins the memory (score first, learn after), and a raw
score calibrated above `protect` (0.999) joins it cut down to the level that `protect` stands for:
anomalies must not teach the memory that they are normal, or a sensor that spikes 1% of the time
would call its spikes ordinary, yet each still counts as one reading at that level, so the
memory's rates stay right (leaving such readings out altogether made the tail shrink and
tripled the false alarms). At most `protect_share` (1%) of the readings are cut down: beyond
that the sensor has changed for good, and a memory of identical scores (a quantised sensor holding
still) could otherwise call every later reading an anomaly and never learn otherwise. The
wrapper is ready once the detector is and `min_scores` raw scores are in memory; `history`
covers the detector's own history plus 1,000 raw scores, so a restarted worker rebuilds both.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from lib.detect.detectors.base import Detector

_XI_LIMIT = 0.5  # tail shapes beyond this are fitting noise on a few hundred excesses
_P_EDGE = 1e-9  # rarer than this, the tail continues as an exponential (see `exceedance`)


# GPD quantiles of excesses: Q(p) = sigma * ((1 - p)^-xi - 1) / xi. The ratio Q(0.9) / Q(0.5)
# depends on xi alone and grows with it, so xi is read off a table of that ratio.
_XI_GRID = np.linspace(-_XI_LIMIT, _XI_LIMIT, 201)
_XI_GRID[np.abs(_XI_GRID) < 1e-9] = 1e-9


def _gpd_quantile(p: float, xi: np.ndarray | float) -> np.ndarray | float:
    return ((1.0 - p) ** -np.asarray(xi) - 1.0) / np.asarray(xi)


_RATIO_GRID = _gpd_quantile(0.9, _XI_GRID) / _gpd_quantile(0.5, _XI_GRID)


def fit_tail(excess: np.ndarray) -> tuple[float, float]:
    """(xi, sigma) of a generalised Pareto tail from the median and the 90th percentile of the
    excesses. Quantiles rather than moments: the largest excesses (anomalies cut down to the
    `protect` level) then do not bend the fit, and moments on a few hundred excesses were
    noisy enough to put the false-alarm rate at twice its target.

    >>> xi, sigma = fit_tail(np.random.default_rng(0).exponential(2.0, 5000))
    >>> abs(xi) < 0.05, round(sigma, 1)
    (True, 2.0)
    """
    if len(excess) < 5:
        return 0.0, max(float(excess.mean()), 1e-12) if len(excess) else 1e-12
    q50, q90 = np.quantile(excess, [0.5, 0.9])
    if q50 <= 0 or q90 <= q50:
        return 0.0, max(float(excess.mean()), 1e-12)
    xi = float(np.interp(q90 / q50, _RATIO_GRID, _XI_GRID))
    return xi, float(q50 / _gpd_quantile(0.5, xi))


class TailModel:
    """P(S >= s) from the recent raw scores: empirical in the body, a generalised Pareto tail.

    >>> m = TailModel(memory=1000, tail=0.9)
    >>> m.learn_many(1 - np.exp(-np.random.default_rng(0).exponential(1.0, 1000)))
    >>> m.fit()
    >>> p = m.exceedance(1 - np.exp(-np.array([0.0, 10.0])))
    >>> round(float(p[0]), 3), 0.00001 < float(p[1]) < 0.0001
    (1.0, True)
    """

    def __init__(self, memory: int = 2000, tail: float = 0.9):
        if memory < 20 or not 0.5 <= tail < 1:
            raise ValueError(f"memory must be at least 20 and tail in [0.5, 1), got {memory}, {tail}")
        self.memory, self.tail = memory, tail
        self._buf = np.zeros(memory)
        self._n = 0
        self._sorted = np.zeros(0)
        self._u, self._xi, self._sigma, self._p_u = 0.0, 0.0, 1.0, 1.0

    @property
    def count(self) -> int:
        return min(self._n, self.memory)

    @staticmethod
    def unsquash(scores: np.ndarray) -> np.ndarray:
        return -np.log1p(-np.clip(np.asarray(scores, dtype=float), 0.0, 1.0 - 1e-15))

    def learn_many(self, scores: np.ndarray) -> None:
        scores = self.unsquash(scores)[-self.memory :]
        at = self._n % self.memory
        first = min(len(scores), self.memory - at)
        self._buf[at : at + first] = scores[:first]
        self._buf[: len(scores) - first] = scores[first:]
        self._n += len(scores)

    def fit(self) -> None:
        s = np.sort(self._buf[: self.count])
        self._sorted = s
        if len(s) < 2:
            return
        k = int(self.tail * len(s))
        self._u = float(s[k])
        excess = s[s > self._u] - self._u
        self._p_u = len(excess) / len(s)
        self._xi, self._sigma = fit_tail(excess)

    def _tail_y(self, p: float) -> float:
        """The unsquashed score whose exceedance the tail puts at `p` (< p_u)."""
        if abs(self._xi) < 1e-6:
            return self._u - self._sigma * math.log(p / self._p_u)
        return self._u + self._sigma * ((p / self._p_u) ** -self._xi - 1.0) / self._xi

    def level(self, p: float) -> float:
        """The raw score whose exceedance is `p` (the inverse of `exceedance`)."""
        s = self._sorted
        if len(s) == 0:
            return 1.0
        if p >= self._p_u:
            y = float(s[min(len(s) - 1, int((1.0 - p) * len(s)))])
        else:
            y = self._tail_y(p)
        return float(-np.expm1(-y))

    def exceedance(self, scores: np.ndarray) -> np.ndarray:
        """P(S >= s) for each s."""
        scores = self.unsquash(scores)
        s = self._sorted
        n = len(s)
        if n == 0:
            return np.ones(len(scores))
        body = (n - np.searchsorted(s, scores, side="left")) / n
        y = np.maximum(scores - self._u, 0.0)
        if abs(self._xi) < 1e-6:
            tail = self._p_u * np.exp(-y / self._sigma)
        else:
            base = np.maximum(1.0 + self._xi * y / self._sigma, 0.0)
            with np.errstate(divide="ignore"):
                tail = self._p_u * np.power(base, -1.0 / self._xi)
        if self._p_u > _P_EDGE:
            # below one in a billion the fitted tail may end (a light tail has a last value) and
            # every stranger reading would tie at 1.0: it goes on as an exponential instead, so a
            # stranger reading stays stranger (an operator's rejection can then tell them apart)
            edge = self._tail_y(_P_EDGE)
            with np.errstate(over="ignore"):
                tail = np.where(scores > edge, _P_EDGE * np.exp(-(scores - edge) / self._sigma), tail)
        # never rarer than the memory itself shows: a quantised sensor's scores take a few values,
        # and a value seen in 1% of the memory is not a one-in-a-thousand reading whatever a
        # smooth tail says
        with np.errstate(over="ignore"):
            return np.where(scores > self._u, np.maximum(tail, body), body)


class Calibrated(Detector):
    """A detector whose scores are 1 - (the share of this sensor's recent readings expected to
    score at least as high). Parameters: the wrapped `detector`, `memory` (raw scores kept),
    `tail` (quantile above which the tail is modelled), `min_scores` (raw scores before the
    calibration is trusted), `refresh` (readings between fits).

    >>> from lib.detect.detectors.zscore import RobustZScoreDetector
    >>> d = Calibrated(RobustZScoreDetector(window=50), min_scores=200)
    >>> rng = np.random.default_rng(0)
    >>> d.learn_many(rng.normal(0, 1, d.warmup))
    >>> d.ready, d.score_one(0.1) < 0.9, d.score_one(8.0) > 0.999
    (True, True, True)
    """

    default_threshold = 0.999

    def __init__(
        self,
        detector: Detector,
        memory: int = 5000,
        tail: float = 0.9,
        min_scores: int = 200,
        refresh: int = 200,
        protect: float = 0.999,
        protect_share: float = 0.01,
    ):
        if not 1 <= min_scores <= memory or refresh < 1:
            raise ValueError(f"min_scores must be in [1, memory] and refresh at least 1, got {min_scores}, {refresh}")
        self.detector = detector
        self.name = detector.name
        self.min_scores, self.refresh = min_scores, refresh
        self.protect, self.protect_share = protect, protect_share
        self._cut = (0, 0)  # (period of `memory` readings, readings cut down in it)
        self.tail_model = TailModel(memory, tail)
        self.seen = 0

    @property
    def warmup(self) -> int:
        return self.detector.warmup + self.min_scores

    @property
    def history(self) -> int:
        # a fifth of the memory: a restarted worker rebuilds 100 sensors' detectors in seconds,
        # and 1,000 scores already fit the tail closely (the rest fills in as readings come)
        return self.detector.history + min(self.tail_model.memory, 1000)

    @property
    def ready(self) -> bool:
        return self.detector.ready and self.tail_model.count >= self.min_scores

    def score_one(self, x: float) -> float:
        return float(1.0 - self.tail_model.exceedance(np.array([self.detector.score_one(x)]))[0])

    def learn_one(self, x: float) -> None:
        self.score_learn_many([x])

    def learn_many(self, xs) -> None:
        self.score_learn_many(list(xs))

    def score_learn_many(self, xs):
        ready, scores = type(self).score_learn_groups([(self, xs)])[0]
        return list(zip(ready.tolist(), scores.tolist()))

    def _calibrate(self, inner_ready: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of readings whose raw scores are `raw`, each judged by the tail as it stood
        before it, refitting every `refresh` readings (at the same readings whatever the
        batching, so a batch scores as one reading at a time would)."""
        ready = np.zeros(len(raw), dtype=bool)
        out = np.zeros(len(raw))
        i = 0
        while i < len(raw):
            if not inner_ready[i]:
                self.seen += 1
                i += 1
                continue
            n = self.refresh - (self.tail_model._n % self.refresh)
            seg = slice(i, min(len(raw), i + n))
            segment_ready = inner_ready[seg]
            n_seg = int(np.argmin(segment_ready)) if not segment_ready.all() else len(segment_ready)
            seg = slice(i, i + n_seg)
            learn = raw[seg]
            if self.tail_model.count >= self.min_scores:
                ready[seg] = True
                out[seg] = 1.0 - self.tail_model.exceedance(raw[seg])
                learn = self._protected(raw[seg], out[seg])
            self.tail_model.learn_many(learn)
            if self.tail_model._n % self.refresh == 0 or self.tail_model.count <= self.min_scores:
                self.tail_model.fit()
            self.seen += n_seg
            i += n_seg
        return ready, out

    def _protected(self, raw: np.ndarray, calibrated: np.ndarray) -> np.ndarray:
        """The raw scores to learn: anomalous ones cut down to the `protect` level, at most
        `protect_share` of each period of `memory` readings. Past that share the sensor has
        changed rather than misbehaved (or the memory lost its tail: a long run of identical
        scores leaves nothing above them), and its readings are learnt as they are. Counted
        reading by reading, so a batch learns exactly what one reading at a time would."""
        odd = np.flatnonzero(calibrated > self.protect)
        if not len(odd):
            return raw
        out = raw.copy()
        level = self.tail_model.level(1.0 - self.protect)
        cap = self.protect_share * self.tail_model.memory
        period, count = self._cut
        for j in odd:
            p = (self.seen + j) // self.tail_model.memory
            if p != period:
                period, count = p, 0
            if count < cap:
                count += 1
                out[j] = min(out[j], level)
        self._cut = (period, count)
        return out

    @classmethod
    def score_learn_groups(cls, groups: Sequence[tuple["Calibrated", Sequence[float]]]):
        """The wrapped detectors of one class are scored together (their own batched path), then
        each sensor's raw scores are calibrated."""
        out: list = [None] * len(groups)
        by_class: dict[type, list[int]] = {}
        for k, (det, _) in enumerate(groups):
            by_class.setdefault(type(det.detector), []).append(k)
        for inner_cls, ks in by_class.items():
            raws = inner_cls.score_learn_groups([(groups[k][0].detector, groups[k][1]) for k in ks])
            for k, (inner_ready, raw) in zip(ks, raws):
                out[k] = groups[k][0]._calibrate(np.asarray(inner_ready, dtype=bool), np.asarray(raw, dtype=float))
        return out


def calibration_rate(threshold: float) -> float:
    """The false-alarm rate a calibrated threshold stands for: 0.999 -> one in 1,000.

    >>> round(1 / calibration_rate(0.999))
    1000
    """
    return max(0.0, 1.0 - threshold) if math.isfinite(threshold) else 0.0
