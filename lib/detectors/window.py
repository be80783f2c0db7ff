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
