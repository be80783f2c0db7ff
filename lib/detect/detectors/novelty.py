"""Novelty over windowed features: the detector that tops NAB among ours (see docs/detectors.md).

Two channels, value only, one reading at a time, bounded memory:
1. Records: the envelope [lo, hi] of the last `range_len` readings. A reading outside it scores
   its distance beyond the envelope as a share of the envelope's width: a value the sensor has
   not produced lately, in units of everything it has produced. Most incidents (spikes, drops,
   level shifts, runaway load) first show as such a value; records grow rarer and smaller as
   history accumulates, so a steady sensor goes quiet on its own, and a finite `range_len` lets
   the envelope forget a one-off glitch.
2. Shapes (nearest-neighbour window novelty, after KNN-CAD and ARTime's windowed categories):
   readings are averaged in blocks of `step`; the last `window` block means form the recent
   shape. Its novelty is the RMS distance to the nearest of the last `memory` stored shapes
   (the ones overlapping it excluded), judged against the largest such distance of the last
   `calib_len` blocks (floored at `floor` times the envelope's width): a shape is anomalous only
   when it is more novel than anything seen lately. Recurring patterns (daily cycles, periodic
   jobs) find a near neighbour and cost nothing; judging against recent novelty makes one
   threshold fit noisy and clean sensors alike and mutes the detector while it discovers a new
   regime; the floor keeps a dead-quiet sensor from alarming on a tiny wiggle.
3. Score = z / (1 + z) with z the larger channel, each reaching 0.5 at its reference (`e0`, `r0`).
4. One alarm per event: a score counts only when it beats every raw score of the previous
   `suppress` readings (else 0): further alarms of the same event are what an operator (and
   NAB) count as false.

Scores are 0 for the first `warmup` readings. Deterministic, picklable; memory is
memory * window floats plus deques of at most `range_len` entries, however long the stream.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from lib.detect.detectors.base import Detector

_MAX_Z = 1e12        # a reading this far beyond the envelope is as odd as it gets: scores stay finite
_MAX_SHAPE = 1e150   # readings near the float limit: block means and squared distances stay finite


def _shape_value(x: float) -> float:
    return min(_MAX_SHAPE, max(-_MAX_SHAPE, x))


class _Shape:
    """Shape-channel state for one block alignment: blocks of `step` readings (the first one
    `offset` readings short), the last `window` block means, a ring of past feature vectors and
    the recent novelty distances."""

    def __init__(self, step: int, window: int, memory: int, calib_len: int, offset: int):
        self.need = step - offset                     # readings still missing in this block
        self.block_sum = 0.0
        self.block_n = 0
        self.means: deque = deque(maxlen=window)
        self.feats = np.zeros((memory, window))
        self.nf = 0                                   # feature vectors stored so far
        self.dists: deque = deque(maxlen=calib_len)
        self.last_ratio = 0.0                         # novelty ratio at its last block end

    def nearest(self, f: np.ndarray, window: int, memory: int) -> float:
        """RMS distance from f to the nearest stored vector, the `window` newest excluded."""
        stop = self.nf - window
        if stop <= 0:
            return -1.0
        if self.nf <= memory:
            F = self.feats[:stop]
        else:
            F = self.feats[np.arange(self.nf - memory, stop) % memory]
        diff = F - f
        return float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min() / window))


class NoveltyDetector(Detector):
    """Parameters:
    step       readings averaged into one block of the shape channel
    window     blocks per shape feature vector
    memory     stored feature vectors (per alignment) searched for the nearest neighbour
    calib_len  blocks over which the recent maximum novelty is taken
    floor      the novelty reference never falls below floor * (hi - lo)
    e0         record excess (fraction of the envelope's width) scoring 0.5
    r0         novelty ratio (to the recent maximum) scoring 0.5
    suppress   readings over which a score must be a new maximum to be reported
    range_len  readings the envelope [lo, hi] covers
    warmup     readings before any score is reported
    min_calib  blocks of novelty history needed before the shape channel scores
    phases     block alignments of the shape channel (median taken); 1 = a single alignment
    """

    name = "novelty"
    default_threshold = 0.5
    calibrate_default = False     # see lib.detect.detectors: its own score is already relative
    #: the knobs its tuning on the NAB development series chose among (the defaults are one of
    #: the 72 sets): the cross-validation re-chooses among them without the left-out category
    nab_grid = {"step": [4, 5, 6], "memory": [1000, 2000], "calib_len": [150, 200, 300], "e0": [0.006, 0.02, 0.05, 0.08]}

    def __init__(self, step: int = 5, window: int = 8, memory: int = 2000, calib_len: int = 200,
                 floor: float = 0.03, e0: float = 0.05, r0: float = 1.25, suppress: int = 20,
                 range_len: int = 10000, warmup: int = 150, min_calib: int = 30, phases: int = 1):
        if min(step, window, calib_len, suppress, range_len, phases) < 1 or memory <= window:
            raise ValueError("step, window, calib_len, suppress, range_len, phases >= 1 "
                             "and memory > window required")
        if e0 <= 0 or r0 <= 0 or floor < 0:
            raise ValueError("e0, r0 > 0 and floor >= 0 required")
        self.step, self.window, self.memory = int(step), int(window), int(memory)
        self.calib_len, self.floor, self.e0, self.r0 = int(calib_len), float(floor), float(e0), float(r0)
        self.suppress, self.range_len = int(suppress), int(range_len)
        self.warmup, self.min_calib = int(warmup), int(min_calib)
        self.phases = min(int(phases), self.step)
        self.n = 0                                    # readings learnt
        self.lo, self.hi = np.inf, -np.inf            # envelope of the last range_len readings
        self._maxq: deque = deque()                   # (index, value), decreasing: sliding max
        self._minq: deque = deque()                   # (index, value), increasing: sliding min
        self._shapes = [_Shape(self.step, self.window, self.memory, self.calib_len,
                               (k * self.step) // self.phases) for k in range(self.phases)]
        self._recent: deque = deque(maxlen=self.suppress)
        self._pending = None                          # score_one's work, reused by learn_one

    @property
    def seen(self) -> int:
        return self.n

    @property
    def history(self) -> int:
        # the envelope's readings, and the stored shapes' (memory blocks of `step`)
        return max(self.warmup, self.range_len, self.memory * self.step + self.window * self.step)

    # ------------------------------------------------------------------ internals
    def _evaluate(self, x: float):
        """Raw score of x and, for each alignment ending a block with x, (feature, distance,
        ratio) that learning x will store (None for the others). State untouched."""
        z = 0.0
        span = self.hi - self.lo
        if self.n >= self.warmup and span > 0:
            z = min(_MAX_Z, max(0.0, x - self.hi, self.lo - x) / span / self.e0)
        done = []
        for sh in self._shapes:
            if sh.need > 1:
                done.append(None)
                continue
            feat, dist, ratio = None, -1.0, 0.0
            if len(sh.means) + 1 >= self.window:
                feat = np.empty(self.window)
                if self.window > 1:
                    feat[:-1] = list(sh.means)[1 - self.window:]
                feat[-1] = (sh.block_sum + _shape_value(x)) / (sh.block_n + 1)
                dist = sh.nearest(feat, self.window, self.memory)
                if dist >= 0 and len(sh.dists) >= self.min_calib and self.n >= self.warmup:
                    ref = max(max(sh.dists), min(self.floor * span, _MAX_SHAPE))
                    if ref > 0:
                        ratio = dist / ref
            done.append((feat, dist, ratio))
        if done[0] is not None:          # the reference alignment ends a block: shape verdict
            ratios = sorted(sh.last_ratio if d is None else d[2] for sh, d in zip(self._shapes, done))
            z = max(z, ratios[len(ratios) // 2] / self.r0)
        return z / (1.0 + z), done

    # ------------------------------------------------------------------ API
    def score_one(self, x: float) -> float:
        """Anomaly score of x in [0, 1) given everything learnt so far (state unchanged)."""
        x = float(x)
        if not math.isfinite(x):          # a missing / broken reading: no opinion, not learnt
            return 0.0
        raw, done = self._evaluate(x)
        self._pending = (x, self.n, raw, done)
        if self.n < self.warmup or (self._recent and raw <= max(self._recent)):
            return 0.0
        return raw

    def learn_one(self, x: float) -> None:
        """Add x to the detector's history."""
        x = float(x)
        if not math.isfinite(x):
            return
        p = self._pending
        if p is not None and p[0] == x and p[1] == self.n:
            raw, done = p[2], p[3]
        else:
            raw, done = self._evaluate(x)
        self._pending = None
        self._recent.append(raw)
        # shape channel, every alignment
        for sh, d in zip(self._shapes, done):
            sh.block_sum += _shape_value(x)
            sh.block_n += 1
            sh.need -= 1
            if d is None:
                continue
            sh.means.append(sh.block_sum / sh.block_n)
            sh.block_sum, sh.block_n, sh.need = 0.0, 0, self.step
            feat, dist, ratio = d
            sh.last_ratio = ratio
            if feat is not None:
                if dist >= 0:
                    sh.dists.append(dist)
                sh.feats[sh.nf % self.memory] = feat
                sh.nf += 1
        # envelope of the last range_len readings (monotonic deques: O(1) amortised)
        i, mq, nq = self.n, self._maxq, self._minq
        while mq and mq[-1][1] <= x:
            mq.pop()
        mq.append((i, x))
        while nq and nq[-1][1] >= x:
            nq.pop()
        nq.append((i, x))
        old = i - self.range_len
        while mq[0][0] <= old:
            mq.popleft()
        while nq[0][0] <= old:
            nq.popleft()
        self.hi, self.lo = mq[0][1], nq[0][1]
        self.n += 1

    def score_learn_many(self, xs) -> list:
        """(ready, score) for each reading in turn, learning each after scoring it."""
        out = []
        score, learn = self.score_one, self.learn_one
        for x in xs:
            ready = self.n >= self.warmup
            out.append((ready, score(x)))
            learn(x)
        return out
