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
