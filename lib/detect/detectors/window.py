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


def learn_cold(det, xs) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Learn the readings that come before `det` is ready (they are "initializing"); returns the
    (ready, scores) arrays to fill in for all of `xs`, and the readings left to score."""
    xs = np.asarray(xs, dtype=float)
    cold = 0
    while cold < len(xs) and not det.ready:
        det.learn_one(float(xs[cold]))
        cold += 1
    return (np.arange(len(xs)) >= cold, np.zeros(len(xs))), xs[cold:]


class WindowDetectorMixin:
    """`score_learn_many` for window detectors: readings scored before the window is full go one
    at a time; the rest are scored together by `_score_rows(previous, xs)` on (n, w) windows, for
    one sensor or (`score_learn_groups`) for every sensor of a poll at once."""

    _chunk = 4096

    def score_learn_many(self, xs):
        ready, scores = type(self).score_learn_groups([(self, xs)])[0]
        return list(zip(ready.tolist(), scores.tolist()))

    def _row_params(self) -> tuple:
        """What `_score_rows` depends on besides the rows: detectors agreeing on it are scored together."""
        return ()

    @classmethod
    def score_learn_groups(cls, groups):
        """Every sensor's ready readings as rows of one (n, w) array per parameter set, scored by
        one `_score_rows` call per `_chunk` rows, then learnt sensor by sensor."""
        out: list = [None] * len(groups)
        pending: dict[tuple, list] = {}
        for k, (det, xs) in enumerate(groups):
            out[k], warm = learn_cold(det, xs)
            if len(warm):
                pending.setdefault((det._window.size, det._row_params()), []).append((k, det, warm))
        for (size, _), items in pending.items():
            prev = stacked_previous([det._window.values() for _, det, _ in items], [warm for *_, warm in items], size)
            xs_all = np.concatenate([warm for *_, warm in items])
            scorer = items[0][1]
            scores_all = np.concatenate([scorer._score_rows(prev[i:i + cls._chunk], xs_all[i:i + cls._chunk])
                                         for i in range(0, len(xs_all), cls._chunk)])
            at = 0
            for k, det, warm in items:
                out[k][1][len(out[k][1]) - len(warm):] = scores_all[at:at + len(warm)]
                at += len(warm)
                for x in warm:
                    det._window.push(float(x))
                det.seen += len(warm)
        return out
