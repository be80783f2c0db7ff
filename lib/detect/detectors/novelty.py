"""Novelty of values, shapes and sequences: the detector that tops NAB among ours (docs/detectors.md).

Value only, one reading at a time, bounded memory, deterministic; per reading x (everything is
computed from the history before x):

0. Input hygiene. Readings are clipped to +-1e150 (squared differences cannot overflow: scores
   stay finite for any finite input). After the warm-up, a "wild" reading more than `wild` (20)
   envelope widths beyond the envelope is learnt only when `wild_run` (3) of them come in a row:
   a lone glitch (an ADC saturating for one reading) raises its alarm and leaves no trace, a jump
   to a new scale is learnt after 3 readings. Any other reading beyond the envelope is learnt
   clipped to `glitch` (2) envelope widths beyond it, so one wide spike cannot squash everything
   else for `range_len` readings while a lasting change is still followed.
1. Envelope: [lo, hi] of the last `range_len` learnt values. Shared by the three channels, so
   everything forgets after `range_len` readings.
2. Records: e = the distance of x beyond the envelope over its width, a value the sensor has not
   produced lately. Most incidents begin as such a value; records grow rarer and smaller as
   history accumulates, so a steady sensor goes quiet on its own.
3. Shapes (after KNN-CAD and ARTime's windowed categories): block means of `step` readings; the
   last `window` of them are the recent shape. At each block end its RMS distance to the nearest
   of the last `memory` stored shapes is judged against the largest such distance of the last
   `calib_len` blocks, floored at `floor` envelope widths and at `lsb_floor` sensor steps (the
   smallest change the sensor ever made: a quantised sensor holding still must not alarm on a
   one-step flicker). A shape counts only when it is more novel than anything seen lately, so one
   threshold fits noisy and clean sensors, and the channel is quiet while a new regime is learnt.
   Novelty a = z / (1 + z), z = max(e / e0, r / r0).
4. Sequences (after CAD OSE's contexts and HTM's anomaly likelihood): x's level among `nbins`
   levels of the envelope, and how surprising it is after contexts of 1..`order` previous levels
   (S); the anomaly likelihoods (-log10 of a normal tail) of the surprisal of a median-of-3
   forecast's residual and of the value itself, each averaged over 1 and 8 readings against its
   own last `lmem` (L). f = `weight` * S + (1 - `weight`) * L / (L + `squash`). It sees what block
   means smooth away: bursts of fast oscillation, a series leaving its usual sequence, a rise
   inside the known range.
5. raw = max(a, f - `shift`): the sequence channel fires far more often than the novelty ones, so
   it counts only when it is very sure.
6. One alarm per event: raw is reported only when it beats every raw score of the previous
   `suppress` readings, else 0 (an operator, and NAB, count every further alarm of the same event
   outside it as false). Scores are 0 for the first `warmup` readings.

Its score is its own scale (0.49 is the alarm point, chosen on the NAB development series), not
calibrated per sensor: see lib.detect.detectors for why.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque

import numpy as np

from lib.detect.detectors.base import Detector

_CLIP = 1e150
_LN10 = math.log(10.0)
_SQRT2 = math.sqrt(2.0)
_ZMAX = 1e9


def _neglog10_tail(z: float) -> float:
    """-log10 of the upper normal tail Q(z), z > 0 (asymptotic beyond 5)."""
    if z < 5.0:
        return -math.log10(0.5 * math.erfc(z / _SQRT2))
    return (0.5 * z * z + math.log(z * 2.5066282746310002) - math.log1p(-1.0 / (z * z))) / _LN10


class _Likelihood:
    """A surprisal stream and its anomaly likelihood (from the predict detector): kernel-count
    density over the last `hist` inputs (kept sorted), running mean / sd of the surprisal averaged
    over each of `windows` readings, over the last `lmem` readings."""

    def __init__(self, hist, bw, lmem, windows, sd_floor):
        self.hist, self.bw, self.lmem, self.windows, self.sd_floor = hist, bw, lmem, windows, sd_floor
        self.fifo = deque()
        self.sorted = []
        self.spread = 0.0
        self.sur = deque(maxlen=max(windows))
        self.lik = [[deque(), 0.0, 0.0] for _ in windows]
        self._means: tuple = (None, -1, [])  # (r, readings, window means) of the last z(r)

    def surprisal(self, v):
        srt = self.sorted
        n = len(srt)
        if n < 4 or self.spread <= 0.0:
            return 0.0
        h = self.spread * self.bw
        a = bisect_left(srt, v - h)
        b = bisect_right(srt, v + h)
        cnt = b - a
        r = -math.log((cnt + 0.5) / (n + 0.5))
        if cnt == 0:
            d = min(v - srt[a - 1] if a > 0 else 1e300, srt[b] - v if b < n else 1e300)
            r += math.log(d / h)
        return r

    def z(self, r):
        sur = self.sur
        n = len(sur)
        best = -1e9
        means = []
        for w, st in zip(self.windows, self.lik):
            k = min(w - 1, n)
            s = r
            for i in range(1, k + 1):
                s += sur[-i]
            m = s / (k + 1)
            means.append(m)
            nb = len(st[0])
            if nb:
                mu = st[1] / nb
                var = st[2] / nb - mu * mu
                sd = math.sqrt(var) if var > 0.0 else 0.0
            else:
                mu, sd = 0.0, 1.0
            z = (m - mu) / (sd if sd > self.sd_floor else self.sd_floor)
            if z > best:
                best = z
        # the same means, in the same order of additions, are what push_surprisal(r) adds next
        self._means = (r, len(sur), means)
        return best

    def push_input(self, v, seen):
        fifo, srt = self.fifo, self.sorted
        fifo.append(v)
        insort(srt, v)
        if len(fifo) > self.hist:
            del srt[bisect_left(srt, fifo.popleft())]
        n = len(srt)
        if n >= 4 and (seen % 50 == 0 or self.spread <= 0.0):
            sp = 0.0
            for qa, qb in ((0.25, 0.75), (0.05, 0.95), (0.0, 1.0)):
                sp = srt[min(n - 1, int(qb * n))] - srt[int(qa * n)]
                if sp > 0:
                    break
            self.spread = sp if sp > 0 else 1e-6 * (abs(srt[n // 2]) + 1e-3)

    def push_surprisal(self, r, seen):
        sur = self.sur
        cached = self._means if self._means[0] == r and self._means[1] == len(sur) else None
        sur.append(r)
        n = len(sur)
        for j, (w, st) in enumerate(zip(self.windows, self.lik)):
            if cached is not None:
                m = cached[2][j]
            else:
                k = min(w, n)
                tot = 0.0
                for i in range(1, k + 1):
                    tot += sur[-i]
                m = tot / k
            st[0].append(m)
            st[1] += m
            st[2] += m * m
            if len(st[0]) > self.lmem:
                o = st[0].popleft()
                st[1] -= o
                st[2] -= o * o
            if seen % 10000 == 0:  # re-sum now and then (rounding drift)
                st[1] = sum(st[0])
                st[2] = sum(v * v for v in st[0])


class _SlidingMax:
    """Maximum of the values pushed at the last `length` indices (monotonic deque)."""

    def __init__(self, length):
        self.length = length
        self.q = deque()

    def push(self, i, v):
        q = self.q
        while q and q[-1][1] <= v:
            q.pop()
        q.append((i, v))
        old = i - self.length
        while q[0][0] <= old:
            q.popleft()

    def value(self):
        return self.q[0][1]


class NoveltyDetector(Detector):
    """Parameters, by channel:

    novelty:  step (readings per block), window (blocks per shape), memory (shapes searched),
              calib_len (blocks of novelty history for the reference), floor (reference floor, in
              envelope widths), lsb_floor (reference floor, in sensor steps changed per shape),
              e0 / r0 (record excess / novelty ratio scoring 0.5), min_calib (blocks of novelty
              history before the shape channel scores)
    envelope: range_len (readings the envelope covers), glitch (envelope widths beyond the
              envelope a learnt value may reach), wild / wild_run (readings beyond `wild` widths
              are learnt only when `wild_run` come in a row)
    sequence: nbins, order, max_ngrams (levels, context length, n-gram cap), hist, bw (density
              memory and bandwidth in IQRs), lmem, lik_windows, sd_floor (likelihood memory,
              averaging windows, sd floor), squash, weight
    output:   shift (raw = max(novelty, f - shift)), suppress (readings a reported score must
              beat), warmup (readings scoring 0)

    >>> d = NoveltyDetector()
    >>> d.learn_many([10.0 + 0.1 * (i % 5) for i in range(d.warmup + 300)])
    >>> d.score_one(10.2) < d.default_threshold < d.score_one(50.0)
    True
    """

    name = "novelty"
    default_threshold = 0.49
    calibrate_default = False  # its score is already relative to the sensor's history
    #: the knobs the cross-validation re-chooses without the left-out category (60 sets; the
    #: other parameters were tuned on the same 29 NAB series by the components' authors)
    nab_grid = {"glitch": [0.0, 1.0, 2.0, 3.0], "e0": [0.02, 0.05, 0.08], "shift": [0.20, 0.22, 0.24, 0.26, 0.28]}

    def __init__(
        self,
        step: int = 5,
        window: int = 8,
        memory: int = 2000,
        calib_len: int = 200,
        floor: float = 0.03,
        lsb_floor: float = 3.0,
        e0: float = 0.05,
        r0: float = 1.25,
        min_calib: int = 30,
        range_len: int = 10000,
        glitch: float = 2.0,
        wild: float = 20.0,
        wild_run: int = 3,
        nbins: int = 8,
        order: int = 5,
        max_ngrams: int = 50_000,
        hist: int = 2000,
        bw: float = 0.1,
        lmem: int = 2000,
        lik_windows: tuple[int, ...] | list[int] = (1, 8),
        sd_floor: float = 0.5,
        squash: float = 20.0,
        weight: float = 0.5,
        shift: float = 0.24,
        suppress: int = 150,
        warmup: int = 150,
    ):
        p = dict(
            step=step,
            window=window,
            memory=memory,
            calib_len=calib_len,
            floor=floor,
            lsb_floor=lsb_floor,
            e0=e0,
            r0=r0,
            min_calib=min_calib,
            range_len=range_len,
            glitch=glitch,
            wild=wild,
            wild_run=wild_run,
            nbins=nbins,
            order=order,
            max_ngrams=max_ngrams,
            hist=hist,
            bw=bw,
            lmem=lmem,
            lik_windows=tuple(int(w) for w in lik_windows),
            sd_floor=sd_floor,
            squash=squash,
            weight=weight,
            shift=shift,
            suppress=suppress,
            warmup=warmup,
        )
        for k in (
            "step",
            "window",
            "memory",
            "calib_len",
            "min_calib",
            "range_len",
            "wild_run",
            "nbins",
            "order",
            "max_ngrams",
            "hist",
            "lmem",
            "suppress",
            "warmup",
        ):
            p[k] = int(p[k])
        if (
            min(
                p["step"],
                p["window"],
                p["calib_len"],
                p["range_len"],
                p["nbins"],
                p["order"],
                p["hist"],
                p["lmem"],
                p["suppress"],
            )
            < 1
            or p["memory"] <= p["window"]
            or not p["lik_windows"]
        ):
            raise ValueError("sizes must be at least 1, memory above window, lik_windows not empty")
        if p["e0"] <= 0 or p["r0"] <= 0 or p["floor"] < 0 or p["lsb_floor"] < 0 or p["glitch"] < 0 or p["squash"] <= 0:
            raise ValueError("e0, r0 and squash must be positive; floor, lsb_floor and glitch not negative")
        for k, v in p.items():
            setattr(self, k, v)
        self.n = 0  # readings learnt
        # envelope
        self.lo, self.hi = math.inf, -math.inf
        self._hiq = _SlidingMax(self.range_len)
        self._loq = _SlidingMax(self.range_len)  # holds -x
        self._lsb = math.inf  # smallest nonzero step between learnt readings
        self._lastx = None
        # shape channel
        self._need = self.step
        self._bsum, self._bn = 0.0, 0
        self._means: deque = deque(maxlen=self.window)
        self._feats = np.zeros((self.memory, self.window))
        self._nf = 0
        self._dists: deque = deque(maxlen=self.calib_len)
        # sequence channel
        self._syms: deque = deque(maxlen=self.order)
        self._ngrams: dict = {}
        self._last3: deque = deque(maxlen=3)
        la = (self.hist, self.bw, self.lmem, self.lik_windows, self.sd_floor)
        self._res = _Likelihood(*la)
        self._val = _Likelihood(*la)
        # output
        self._rawq: deque = deque()  # (index, raw), decreasing: sliding max
        self._seen = 0  # readings scored and passed to learn_one
        self._wildq: list = []  # wild readings waiting for confirmation
        self._pending = None

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def ready(self) -> bool:
        return self.n >= self.warmup

    @property
    def history(self) -> int:
        # the envelope's readings, and the stored shapes' (memory blocks of `step`)
        return max(self.warmup, self.range_len, self.memory * self.step + self.window * self.step)

    # ------------------------------------------------------------------ parts
    def _learnt_value(self, x: float) -> float:
        """x as learnt: clipped to `glitch` envelope widths beyond the envelope."""
        if self.glitch > 0.0 and self.n >= self.warmup:
            g = self.glitch * (self.hi - self.lo)
            if g > 0.0:
                if x > self.hi + g:
                    return self.hi + g
                if x < self.lo - g:
                    return self.lo - g
        return x

    def _level(self, x: float) -> int:
        lo, hi = self.lo, self.hi
        if self.n == 0:
            return 0
        rng = hi - lo
        if rng <= 0.0:
            return 0 if x == lo else (-1 if x < lo else self.nbins)
        q = (x - lo) / rng * (self.nbins - 1)
        lim = 4 * self.nbins  # far beyond the envelope: one level
        return int(math.floor(min(max(q, -lim), lim)))

    def _sequence(self, s: int) -> float:
        syms = tuple(self._syms)
        ng = self._ngrams
        sel = 0
        conf = 0.0
        new = 0
        for k in range(1, len(syms) + 1):
            ctx = syms[-k:]
            c = ng.get(ctx)
            if not c:
                continue
            sel += 1
            cs = ng.get(ctx + (s,), 0)
            if cs:
                conf += cs / c
            else:
                new += 1
        if sel == 0:
            return 1.0
        return 0.5 * (1.0 - conf / sel + new / sel)

    def _residual(self, x: float) -> float:
        last = self._last3
        n = len(last)
        if n == 3:
            a, b, c = last
            pred = max(min(a, b), min(max(a, b), c))
        elif n == 2:
            pred = 0.5 * (last[0] + last[1])
        elif n == 1:
            pred = last[0]
        else:
            return 0.0
        return abs(x - pred)

    def _nearest(self, f: np.ndarray) -> float:
        stop = self._nf - self.window
        if stop <= 0:
            return -1.0
        if self._nf <= self.memory:
            diff = self._feats[:stop] - f
            return float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min() / self.window))
        # the whole ring, its `window` newest (overlapping) shapes masked: a copy of the ring in
        # age order cost more than the distances themselves
        diff = self._feats - f
        d2 = np.einsum("ij,ij->i", diff, diff)
        newest = np.arange(stop, self._nf) % self.memory
        d2[newest] = np.inf
        return float(np.sqrt(d2.min() / self.window))

    def _evaluate(self, x: float):
        """Everything score_one needs and learn_one stores; the state is not touched."""
        xl = self._learnt_value(x)
        ready = self.n >= self.warmup
        span = self.hi - self.lo
        # record channel (scored on x itself)
        z = 0.0
        if ready and span > 0.0:
            z = min(max(0.0, x - self.hi, self.lo - x) / span, _ZMAX) / self.e0
        # shape channel (block end only; the block mean uses the learnt value)
        shape = None
        if self._need <= 1:
            feat, dist = None, -1.0
            if len(self._means) + 1 >= self.window:
                feat = np.empty(self.window)
                if self.window > 1:
                    feat[:-1] = list(self._means)[1 - self.window :]
                feat[-1] = (self._bsum + xl) / (self._bn + 1)
                dist = self._nearest(feat)
                if dist >= 0.0 and len(self._dists) >= self.min_calib and ready:
                    fl = self.floor * span
                    if self._lsb < math.inf:  # resolution floor (quantised sensors)
                        fl = max(fl, self.lsb_floor * self._lsb / (self.step * math.sqrt(self.window)))
                    ref = max(max(self._dists), fl)
                    if ref > 0.0:
                        z = max(z, min(dist / ref, _ZMAX) / self.r0)
            shape = (feat, dist)
        a = z / (1.0 + z)
        # sequence channel (scored on x, learnt as xl)
        s = self._level(x)
        seq = self._sequence(s)
        e = self._residual(x)
        rr = self._res.surprisal(e)
        zz = self._res.z(rr)
        L = _neglog10_tail(zz) if zz > 0.0 else 0.0
        rv = self._val.surprisal(x)
        zz = self._val.z(rv)
        if zz > 0.0:
            L += _neglog10_tail(zz)
        f = self.weight * seq + (1.0 - self.weight) * L / (L + self.squash)
        raw = max(a, f - self.shift) if ready else 0.0
        if not (raw >= 0.0):  # NaN guard (should not happen)
            raw = 1.0
        return raw, xl, shape, (a, f), (s, e, rr, rv)

    # ------------------------------------------------------------------ API
    def score_one(self, x: float) -> float:
        """Anomaly score of x in [0, 1) given everything learnt so far (state unchanged)."""
        x = float(x)
        if not math.isfinite(x):  # missing / broken reading: no opinion
            return 0.0
        x = min(max(x, -_CLIP), _CLIP)
        ev = self._evaluate(x)
        self._pending = (x, self.n, ev)
        raw = ev[0]
        if self.n < self.warmup or (self._rawq and raw <= self._rawq[0][1]):
            return 0.0
        return raw

    def learn_one(self, x: float) -> None:
        """Add x to the history."""
        x = float(x)
        if not math.isfinite(x):
            return
        x = min(max(x, -_CLIP), _CLIP)
        p = self._pending
        ev = p[2] if (p is not None and p[0] == x and p[1] == self.n) else self._evaluate(x)
        self._pending = None
        # suppression queue: max raw of the last `suppress` readings (every reading counts)
        j = self._seen
        self._seen += 1
        q = self._rawq
        while q and q[-1][1] <= ev[0]:
            q.pop()
        q.append((j, ev[0]))
        if q[0][0] <= j - self.suppress:
            q.popleft()
        # wild readings (beyond `wild` envelope widths) are learnt only once `wild_run` of them
        # come in a row: a lone glitch is scored but never enters the history
        span = self.hi - self.lo
        if (
            self.wild > 0.0
            and self.n >= self.warmup
            and span > 0.0
            and (x > self.hi + self.wild * span or x < self.lo - self.wild * span)
        ):
            self._wildq.append(x)
            if len(self._wildq) < self.wild_run:
                return
            pend, self._wildq = self._wildq, []
            for v in pend:
                self._absorb(v, None)
            return
        self._wildq = []
        self._absorb(x, ev)

    def _absorb(self, x: float, ev) -> None:
        """Learn x (ev: its _evaluate result, or None to compute it)."""
        if ev is None:
            ev = self._evaluate(x)
        xl, shape = ev[1], ev[2]
        i = self.n
        # shape channel
        self._bsum += xl
        self._bn += 1
        self._need -= 1
        if shape is not None:
            self._means.append(self._bsum / self._bn)
            self._bsum, self._bn, self._need = 0.0, 0, self.step
            feat, dist = shape
            if feat is not None:
                if dist >= 0.0:
                    self._dists.append(dist)
                self._feats[self._nf % self.memory] = feat
                self._nf += 1
        if self._lastx is not None:
            dx = abs(xl - self._lastx)
            if 0.0 < dx < self._lsb:
                self._lsb = dx
        self._lastx = xl
        # sequence channel (level of xl against the envelope before it)
        if xl == x:
            s, e, rr, rv = ev[4]
        else:  # a glitch: learn the clipped value
            s, e = self._level(xl), self._residual(xl)
            rr, rv = self._res.surprisal(e), self._val.surprisal(xl)
        full = tuple(self._syms) + (s,)
        ng = self._ngrams
        for k in range(1, len(full) + 1):
            key = full[-k:]
            ng[key] = ng.get(key, 0) + 1
        if len(ng) > self.max_ngrams:  # bounded memory: halve counts, drop rare
            self._ngrams = {k: c // 2 for k, c in ng.items() if c > 1}
        self._syms.append(s)
        seen = i + 1
        if self._last3:
            self._res.push_input(e, seen)
        self._last3.append(xl)
        self._val.push_input(xl, seen)
        self._res.push_surprisal(rr, seen)
        self._val.push_surprisal(rv, seen)
        # envelope of the last range_len learnt values
        self._hiq.push(i, xl)
        self._loq.push(i, -xl)
        self.hi, self.lo = self._hiq.value(), -self._loq.value()
        self.n = seen

    def score_learn_many(self, xs) -> list:
        """(ready, score) for each reading in turn, learning each after scoring it."""
        out = []
        score, learn = self.score_one, self.learn_one
        for x in xs:
            ready = self.n >= self.warmup
            out.append((ready, score(x)))
            learn(x)
        return out
