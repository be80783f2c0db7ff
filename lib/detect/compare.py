"""Comparing detectors: agreement between two detectors' verdicts, scores against a truth, and
replaying a stored series through a detector with other parameters.

Agreement is measured on readings both detectors judged (initializing readings are left out):
Jaccard = both flagged / either flagged; Cohen's kappa corrects raw agreement for what two
detectors flagging at their own rates would agree on by chance.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from lib.detect import detectors
from lib.states import STATE_ANOMALY


def jaccard(n11: int, n10: int, n01: int, n00: int = 0) -> float:
    """Share of the readings either rater flagged that both flagged.

    >>> jaccard(2, 1, 1)
    0.5
    """
    either = n11 + n10 + n01
    return n11 / either if either else float("nan")


def kappa(n11: int, n10: int, n01: int, n00: int) -> float:
    """Cohen's kappa of two binary raters. 1: perfect agreement, 0: chance, <0: worse.

    >>> round(kappa(20, 5, 10, 15), 2)
    0.4
    """
    n = n11 + n10 + n01 + n00
    if not n:
        return float("nan")
    po = (n11 + n00) / n
    pe = ((n11 + n10) * (n11 + n01) + (n01 + n00) * (n10 + n00)) / (n * n)
    if pe == 1:
        return 1.0 if po == 1 else float("nan")
    return (po - pe) / (1 - pe)


def agreement_matrix(pairs: pd.DataFrame, measure: str = "kappa") -> pd.DataFrame:
    """Square matrix (detector x detector) of `measure` ("kappa" or "jaccard") from
    `lib.page.queries.pair_counts`."""
    fn = kappa if measure == "kappa" else jaccard
    if pairs.empty:
        return pd.DataFrame()
    vals = pairs.assign(v=[fn(r.n11, r.n10, r.n01, r.n00) for r in pairs.itertuples()])
    return vals.pivot(index="a", columns="b", values="v").rename_axis(index=None, columns=None)


def precision_recall_f1(scores: pd.DataFrame) -> pd.DataFrame:
    """Add precision (tp / (tp + fp): the share of flagged readings that are an anomaly's), recall
    (caught / anomalies: the share of anomalies with a flag) and F1, NaN where undefined, to
    `lib.page.queries.scores_vs_truth`'s counts.

    >>> precision_recall_f1(pd.DataFrame({"anomalies": [4], "caught": [2], "tp": [2], "fp": [3]}))[
    ...     ["precision", "recall"]].values.tolist()
    [[0.4, 0.5]]
    """
    out = scores.copy()
    tp, fp, caught, n = (out[c].astype(float) for c in ("tp", "fp", "caught", "anomalies"))
    out["precision"] = np.where(tp + fp > 0, tp / (tp + fp).where(tp + fp > 0, 1), np.nan)
    out["recall"] = np.where(n > 0, caught / n.where(n > 0, 1), np.nan)
    p, r = out["precision"], out["recall"]
    out["f1"] = np.where((p + r) > 0, 2 * p * r / (p + r).where((p + r) > 0, 1), np.nan)
    return out


def replay(values: list[float], name: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run `values` (one sensor of one session, in order) through a fresh detector built from the
    registry, scoring each reading before learning it as the live worker does: state and score
    per reading."""
    det, decision = detectors.build(name, params)
    out = det.score_learn_many(list(map(float, values)))
    return pd.DataFrame(
        {
            "state": [decision.state(ready, score) for ready, score in out],
            "score": [score if ready else None for ready, score in out],
        }
    )


def replay_vs_live(series: pd.DataFrame, replayed: pd.DataFrame, live: pd.DataFrame) -> dict[str, Any]:
    """Compare a replay's verdicts with what was flagged live on the same readings (by seq)."""
    rep = (
        series[["seq", "ts", "value"]]
        .reset_index(drop=True)
        .assign(replay=replayed["state"].values, replay_score=replayed["score"].values)
    )
    merged = rep.merge(live.rename(columns={"state": "live", "score": "live_score"}), on="seq", how="left")
    judged = merged[(merged["replay"] != "initializing") & merged["live"].notna() & (merged["live"] != "initializing")]
    a = judged["replay"] == STATE_ANOMALY
    b = judged["live"] == STATE_ANOMALY
    counts = dict(n11=int((a & b).sum()), n10=int((a & ~b).sum()), n01=int((~a & b).sum()), n00=int((~a & ~b).sum()))
    return {
        "rows": merged,
        "replay_flagged": int((merged["replay"] == STATE_ANOMALY).sum()),
        "live_flagged": int((merged["live"] == STATE_ANOMALY).sum()),
        "judged": len(judged),
        **counts,
        "jaccard": jaccard(**counts),
        "kappa": kappa(**counts),
    }
