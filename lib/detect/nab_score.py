"""A NAB-style score, written from the Numenta Anomaly Benchmark's published scoring rules
(numenta/NAB, `nab/sweeper.py` and the NAB paper), so detectors can be compared on NAB data
and on the simulator's truth without NAB's code.

The rules, per data file, for one threshold (a row is a detection when its score >= threshold):
- The first 15% of rows (at most 750) are probationary: not scored at all.
- Inside a labelled window, a detection earns `A_TP * sigma(p) / sigma(-1)`, where `p` is its
  relative position in the window (-1 at the left edge, near 0 at the right edge) and
  `sigma(p) = 2 / (1 + exp(5 p)) - 1`; only the window's best (earliest) detection counts. A
  window with no detection costs `A_FN` (-1).
- Outside every window, each detection costs `A_FP * sigma(p)` with `p` the distance past the
  previous window's right edge in window widths (so a detection just after a window costs almost
  nothing, one far after costs about `A_FP`), or the full `A_FP` before the first window.
- True negatives score 0 (NAB's A_TN weight never enters the sum).

The raw scores of all files are summed, one threshold is chosen for the whole corpus (the one
with the best total), and the total is normalised to 0..100 between the null detector (never
detects: every window missed) and the perfect one (every window detected at its left edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: NAB's application profiles (numenta/NAB config/profiles.json): the standard one, one that
#: doubles the cost of a false alarm, one that doubles the cost of a missed window
STANDARD = {"tp": 1.0, "fp": 0.11, "fn": 1.0, "tn": 1.0}
PROFILES = {
    "standard": STANDARD,
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0, "tn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0, "tn": 1.0},
}
PROBATION_PERCENT = 0.15


def scaled_sigmoid(position: float) -> float:
    if position >= 3.0:  # far behind a window: the full false-positive cost
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    return int(min(math.floor(percent * n_rows), percent * 5000))


def window_rows(timestamps: list, windows: list) -> list[tuple[int, int]]:
    """Inclusive (first row, last row) of each window given as (start, end) timestamps that match
    rows (NAB's `combined_windows.json`)."""
    index = {t: i for i, t in enumerate(timestamps)}
    out = []
    for start, end in windows:
        if start not in index or end not in index:
            raise ValueError(f"window {start} .. {end} does not match the file's timestamps")
        out.append((index[start], index[end]))
    return out


@dataclass
class FileScorer:
    """Everything threshold-independent about one file, so many thresholds score cheaply."""

    name: str
    n: int
    windows: list[tuple[int, int]]
    profile: dict = field(default_factory=lambda: dict(STANDARD))

    def __post_init__(self):
        n, prob = self.n, probationary_length(self.n)
        self.row_weight = np.empty(n)
        self.row_window = np.full(n, -1)  # index of the window the row is in, -1 outside
        max_tp = scaled_sigmoid(-1.0)
        prev_right, prev_width = None, None
        wins = sorted(self.windows)
        w_i = 0
        i = 0
        while i < n:
            if w_i < len(wins) and i == wins[w_i][0]:
                left, right = wins[w_i]
                width = right - left + 1
                for j in range(left, right + 1):
                    pos = -(right - j + 1) / width
                    self.row_weight[j] = scaled_sigmoid(pos) * self.profile["tp"] / max_tp
                    self.row_window[j] = w_i
                prev_right, prev_width = right, width
                w_i += 1
                i = right + 1
                continue
            pos = 3.0 if prev_right is None else abs(prev_right - i) / max(prev_width - 1, 1)
            self.row_weight[i] = scaled_sigmoid(pos) * self.profile["fp"]
            i += 1
        self.scored = np.arange(n) >= prob
        # a window entirely inside the probationary period is not scored (NAB drops its rows)
        self.window_scored = [bool(self.scored[r]) for _, r in wins]
        self.n_windows = sum(self.window_scored)

    def score(self, scores: np.ndarray, threshold: float) -> dict:
        """Raw NAB score and window counts of one file at `threshold`."""
        return self.score_many(scores, np.array([threshold]))[0]

    def score_many(self, scores: np.ndarray, thresholds: np.ndarray) -> list[dict]:
        scores = np.asarray(scores, dtype=float)
        if len(scores) != self.n:
            raise ValueError(f"{self.name}: {len(scores)} scores for {self.n} rows")
        thresholds = np.asarray(thresholds, dtype=float)
        outside = self.scored & (self.row_window < 0)
        # FP cost at threshold t: sum of weights of outside rows with score >= t
        fp_s = scores[outside]
        order = np.argsort(-fp_s)
        fp_sorted = fp_s[order]
        fp_cum = np.concatenate(([0.0], np.cumsum(self.row_weight[outside][order])))
        n_fp = np.searchsorted(-fp_sorted, -thresholds, side="right")
        total = fp_cum[n_fp]
        tp = np.zeros(len(thresholds), dtype=int)
        for w_i, (left, right) in enumerate(sorted(self.windows)):
            if not self.window_scored[w_i]:
                continue
            rows = np.arange(left, right + 1)
            rows = rows[self.scored[rows]]
            # the earliest detection counts (weights fall along the window): it is the first row
            # whose running maximum of the score reaches the threshold
            run_max = np.maximum.accumulate(scores[rows])
            first = np.searchsorted(run_max, thresholds, side="left")
            hit = first < len(rows)
            gain = np.where(hit, self.row_weight[rows][np.minimum(first, len(rows) - 1)], -self.profile["fn"])
            total = total + gain
            tp += hit
        return [
            {"raw": float(total[k]), "tp_windows": int(tp[k]), "windows": self.n_windows, "fp_rows": int(n_fp[k])}
            for k in range(len(thresholds))
        ]

    @property
    def null_score(self) -> float:
        return -self.profile["fn"] * self.n_windows

    @property
    def perfect_score(self) -> float:
        return self.profile["tp"] * self.n_windows


def candidate_thresholds(all_scores: list[np.ndarray], limit: int = 2000) -> np.ndarray:
    """Thresholds worth trying: every distinct score when few, else quantiles plus the top tail
    (where a good threshold usually sits)."""
    s = np.unique(np.concatenate([np.asarray(a, dtype=float) for a in all_scores]))
    if len(s) <= limit:
        return np.concatenate((s, [1.1]))
    qs = np.quantile(s, np.linspace(0, 1, limit // 2))
    return np.unique(np.concatenate((qs, s[-limit // 2 :], [1.1])))


def normalised(raw: float, null: float, perfect: float) -> float:
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


def corpus_score(files: list[tuple[FileScorer, np.ndarray]], threshold: float | None = None) -> dict:
    """NAB-style score of a corpus: the best single threshold (unless one is given), the
    normalised total, and per-file raw scores at that threshold."""
    thresholds = np.array([threshold]) if threshold is not None else candidate_thresholds([s for _, s in files])
    per_file = [fs.score_many(s, thresholds) for fs, s in files]
    totals = np.array([sum(pf[k]["raw"] for pf in per_file) for k in range(len(thresholds))])
    best = int(np.argmax(totals))
    null = sum(fs.null_score for fs, _ in files)
    perfect = sum(fs.perfect_score for fs, _ in files)
    return {
        "threshold": float(thresholds[best]),
        "raw": float(totals[best]),
        "score": normalised(float(totals[best]), null, perfect),
        "files": {fs.name: pf[best] for (fs, _), pf in zip(files, per_file)},
    }
