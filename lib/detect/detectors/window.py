"""The original program's FIFO (docs/origins.md): the last `size` readings, as a numpy array when
a detector needs one."""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from lib.detect.detectors.base import Detector


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


# Readings near the float limit (a sensor sending +-1.7e308) overflow the differences that robust
# units are made of, and inf / inf is nan, which compares as "normal". Rows holding such readings
# are first divided by a power of two (exact, and robust units do not depend on the scale).
_HUGE = 2.0**500
_SHRINK = 2.0**-600
_FAR = 1e12


def standardise_rows(rows: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of previous readings (n, w) and its new reading xs (n,) in robust units of the row
    (centred on its median, divided by its spread), finite for any finite input.

    >>> p, q = standardise_rows(np.array([[1.0, 2.0, 3.0], [-1.7e308, 1.7e308, -1.7e308]]), np.array([10.0, 1.7e308]))
    >>> bool(np.isfinite(p).all() and np.isfinite(q).all()), float(q[0]) > 5
    (True, True)
    """
    peak = np.maximum(np.max(np.abs(rows), axis=1), np.abs(xs))
    if (peak > _HUGE).any():
        factor = np.where(peak > _HUGE, _SHRINK, 1.0)
        rows, xs = rows * factor[:, None], xs * factor
    centre, spread = robust_scale_rows(rows)
    with np.errstate(over="ignore"):
        p, q = (rows - centre[:, None]) / spread[:, None], (xs - centre) / spread
    # beyond a trillion deviations a reading is as odd as it gets: bounded, so scores stay finite
    return np.clip(p, -_FAR, _FAR), np.clip(q, -_FAR, _FAR)


def learn_cold(det, xs) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Learn the readings that come before `det` is ready (they are "initializing"); returns the
    (ready, scores) arrays to fill in for all of `xs`, and the readings left to score."""
    xs = np.asarray(xs, dtype=float)
    cold = 0
    while cold < len(xs) and not det.ready:
        det.learn_one(float(xs[cold]))
        cold += 1
    return (np.arange(len(xs)) >= cold, np.zeros(len(xs))), xs[cold:]


class WindowDetector(Detector):
    """A detector that judges each reading against the `window` readings before it, as the
    original program's FIFO did. The base owns the window, the warm-up (the window must be full)
    and the batched path; a subclass only says how to score rows of previous readings:
    `_score_rows(previous, xs, numbers)` with `previous` an (n, window) array, `xs` the n readings
    and `numbers` each reading's number in its sensor's stream (for detectors whose random draws
    must not depend on how readings were batched).

    Readings scored before the window is full go one at a time; the rest are scored together, for
    one sensor or (`score_learn_groups`) for every sensor of a poll at once, in one call per
    `_chunk` rows: at 100 sensors a call per sensor cost more than the scoring itself."""

    seed_window: ClassVar[bool] = True
    _chunk: ClassVar[int] = 4096

    def __init__(self, window: int):
        if int(window) != window or window < 2:
            raise ValueError(f"window must be an integer of at least 2, got {window!r}")
        self.window_size = int(window)
        self.warmup = self.window_size
        self.seen = 0
        self._window = Window(self.window_size)

    @abc.abstractmethod
    def _score_rows(self, previous: np.ndarray, xs: np.ndarray, numbers: np.ndarray) -> np.ndarray: ...

    def _row_params(self) -> tuple:
        """What `_score_rows` depends on besides the rows: detectors agreeing on it are scored together."""
        return ()

    def score_one(self, x: float) -> float:
        return float(
            self._score_rows(self._window.values()[None, :], np.array([x], dtype=float), np.array([self.seen]))[0]
        )

    def learn_one(self, x: float) -> None:
        self._window.push(x)
        self.seen += 1

    def score_learn_many(self, xs):
        ready, scores = type(self).score_learn_groups([(self, xs)])[0]
        return list(zip(ready.tolist(), scores.tolist()))

    @classmethod
    def score_learn_groups(cls, groups):
        out: list = [None] * len(groups)
        pending: dict[tuple, list] = {}
        for k, (det, xs) in enumerate(groups):
            out[k], warm = learn_cold(det, xs)
            if len(warm):
                pending.setdefault((det.window_size, det._row_params()), []).append((k, det, warm))
        for (size, _), items in pending.items():
            prev = stacked_previous([det._window.values() for _, det, _ in items], [warm for *_, warm in items], size)
            xs_all = np.concatenate([warm for *_, warm in items])
            numbers = np.concatenate([det.seen + np.arange(len(warm)) for _, det, warm in items])
            scorer = items[0][1]
            scores_all = np.concatenate(
                [
                    scorer._score_rows(
                        prev[i : i + cls._chunk], xs_all[i : i + cls._chunk], numbers[i : i + cls._chunk]
                    )
                    for i in range(0, len(xs_all), cls._chunk)
                ]
            )
            at = 0
            for k, det, warm in items:
                out[k][1][len(out[k][1]) - len(warm) :] = scores_all[at : at + len(warm)]
                at += len(warm)
                for x in warm:
                    det._window.push(float(x))
                det.seen += len(warm)
        return out
