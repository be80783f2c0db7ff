"""Operator labels fed back into judging.

A flag the operator rejects ("this reading is normal") raises that sensor's threshold for the
detector that flagged it: scores are calibrated (1 - how rare a reading is for this sensor), so
"a reading this unusual is normal here" becomes "flag only readings ten times rarer than that
one", and readings like the rejected one (the next door opening, a little larger or smaller) are
judged normal from then on while a clearly stranger one is still flagged. A rejection without a detector applies to
every detector that
flagged the reading. Threshold rules (`rule:*`) are the operator's own settings and are not moved:
a rejected rule hit says the rule's limits need changing in vigie.toml.

Confirmed flags stay what they are (the detectors already flag them) and count as truth in
Compare's precision and recall.

Labels live in the store's `labels` table, so the floors survive restarts: a detector worker
reads them at start and every `FEEDBACK_S` seconds (`rejected_floors`), and `Judge` applies them.
"""

from __future__ import annotations

#: seconds between two reads of the operator's rejections by a running detector worker
FEEDBACK_S = 10.0


def rejected_floors(conn) -> dict[tuple[str, str], float]:
    """{(sensor, detector): the highest score of a flag the operator rejected}, read on `conn`
    (lib.store.reader.read_db)."""
    from lib.store.named import rejected_flags  # a named read: a running store answers it

    return {(sensor, detector): float(score) for sensor, detector, score in rejected_flags(conn)}


#: a rejected reading's rarity is divided by this: readings up to this much rarer are "like it"
LIKE_FACTOR = 10.0
#: a threshold never rises past this (a rejected reading at the limit of what scores can tell)
MAX_THRESHOLD = 1.0 - 1e-12


def raised_threshold(threshold: float, floor: float | None) -> float:
    """The decision threshold once rejections are taken in: flags need a score rarer, ten times
    over, than every rejected one.

    >>> round(raised_threshold(0.999, 0.9995), 9), raised_threshold(0.999, 0.99), raised_threshold(0.999, None)
    (0.99995, 0.999, 0.999)
    """
    if floor is None:
        return threshold
    return max(threshold, min(MAX_THRESHOLD, 1.0 - (1.0 - floor) / LIKE_FACTOR))
