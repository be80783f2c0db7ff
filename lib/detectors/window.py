"""The seed's FIFO: the last `size` readings, as a numpy array when a detector needs one."""
from __future__ import annotations

import numpy as np


class Window:
    """A ring buffer of floats. `values()` returns them oldest first."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.size = size
        self._buf = np.zeros(size)
        self._n = 0  # readings pushed so far

    def push(self, x: float) -> None:
        self._buf[self._n % self.size] = x
        self._n += 1

    @property
    def full(self) -> bool:
        return self._n >= self.size

    def __len__(self) -> int:
        return min(self._n, self.size)

    def values(self) -> np.ndarray:
        if self._n <= self.size:
            return self._buf[: self._n].copy()
        i = self._n % self.size
        return np.concatenate((self._buf[i:], self._buf[:i]))


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(centre, spread): median and MAD scaled to a normal's standard deviation, with fallbacks so
    that a flat window (a stuck sensor, a quantised one) does not divide by zero."""
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    if mad > 0:
        return med, mad
    std = float(np.std(values))
    if std > 0:
        return med, std
    return med, max(abs(med) * 1e-3, 1e-6)


def sliding_previous(history: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """For each x in `xs`, the `size` readings before it (oldest first), as rows of an (n, size)
    view: `history` holds at least the `size` readings before xs[0]."""
    from numpy.lib.stride_tricks import sliding_window_view
    allv = np.concatenate((history[-size:], xs))
    return sliding_window_view(allv, size)[: len(xs)]


def stacked_previous(windows: list[np.ndarray], xss: list[np.ndarray], size: int) -> np.ndarray:
    """`sliding_previous` for many sensors at once, rows stacked in order: one strided view over
    every sensor's history and readings, then a gather of the rows wanted."""
    from numpy.lib.stride_tricks import sliding_window_view
    parts, starts, lens = [], [], []
    at = 0
    for history, xs in zip(windows, xss):
        part = np.concatenate((history[-size:], xs))
        parts.append(part)
        starts.append(at)
        lens.append(len(xs))
        at += len(part)
    view = sliding_window_view(np.concatenate(parts), size)
    lens_a = np.array(lens)
    first_row = np.repeat(np.array(starts) - np.concatenate(([0], np.cumsum(lens_a)[:-1])), lens_a)
    return view[first_row + np.arange(int(lens_a.sum()))]


def robust_scale_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`robust_scale` for each row of an (n, w) array at once, with the same fallbacks."""
    med = np.median(rows, axis=1)
    mad = 1.4826 * np.median(np.abs(rows - med[:, None]), axis=1)
    std = np.std(rows, axis=1)
    floor = np.maximum(np.abs(med) * 1e-3, 1e-6)
    spread = np.where(mad > 0, mad, np.where(std > 0, std, floor))
    return med, spread


class WindowDetectorMixin:
    """`score_learn_many` for window detectors: readings scored before the window is full go one
    at a time; the rest are scored together by `_score_rows(previous, xs)` on (n, w) windows."""

    _chunk = 4096

    def score_learn_many(self, xs):
        xs = np.asarray(xs, dtype=float)
        out = []
        i = 0
        while i < len(xs) and not self.ready:
            out.append((False, 0.0))
            self.learn_one(float(xs[i]))
            i += 1
        for start in range(i, len(xs), self._chunk):
            chunk = xs[start:start + self._chunk]
            prev = sliding_previous(self._window.values(), chunk, self._window.size)
            scores = self._score_rows(prev, chunk)
            out.extend((True, float(s)) for s in scores)
            for x in chunk:
                self._window.push(float(x))
            self.seen += len(chunk)
            self._after_many(chunk)
        return out

    def _after_many(self, chunk) -> None:
        pass

    def _row_params(self) -> tuple:
        """What `_score_rows` depends on besides the rows: detectors agreeing on it are scored together."""
        return ()

    @classmethod
    def score_learn_groups(cls, groups):
        """Every sensor's ready readings as rows of one (n, w) array per parameter set, scored by
        one `_score_rows` call, then learnt sensor by sensor."""
        out: list = [None] * len(groups)
        pending: dict[tuple, list] = {}
        for k, (det, xs) in enumerate(groups):
            xs = np.asarray(xs, dtype=float)
            cold = 0
            while cold < len(xs) and not det.ready:
                det.learn_one(float(xs[cold]))
                cold += 1
            ready = np.arange(len(xs)) >= cold
            warm = xs[cold:]
            if type(det)._after_many is not WindowDetectorMixin._after_many or not len(warm):
                # a detector with per-chunk state to keep (or nothing left to score) goes alone
                scores = np.zeros(len(xs))
                if len(warm):
                    scores[cold:] = [s for _, s in det.score_learn_many(warm)]
                out[k] = (ready, scores)
                continue
            key = (det._window.size, det._row_params())
            pending.setdefault(key, []).append((k, det, ready, warm))
        for items in pending.values():
            prev = stacked_previous([det._window.values() for _, det, _, _ in items], [w for *_, w in items],
                                    items[0][1]._window.size)
            xs_all = np.concatenate([warm for _, _, _, warm in items])
            scores_all = np.concatenate([items[0][1]._score_rows(prev[i:i + cls._chunk], xs_all[i:i + cls._chunk])
                                         for i in range(0, len(xs_all), cls._chunk)])
            at = 0
            for k, det, ready, warm in items:
                scores = np.zeros(len(ready))
                scores[len(ready) - len(warm):] = scores_all[at:at + len(warm)]
                at += len(warm)
                for x in warm:
                    det._window.push(float(x))
                det.seen += len(warm)
                out[k] = (ready, scores)
        return out
