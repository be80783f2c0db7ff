"""The states a reading is judged into, shared by every stage: detectors and rules produce them,
the transport carries them as one letter each, the store files them and the page draws them.
Nothing here imports the rest of Vigie, so a detector can use them without loading the database.
"""

from __future__ import annotations

import numpy as np

STATE_INITIALIZING, STATE_NORMAL, STATE_ANOMALY = "initializing", "normal", "anomaly"

# States travel as one letter each (a detector's states for a poll are one string): the detectors
# encode, and the store decodes, a string per column instead of a Python object per row.
STATE_CODES = {"i": STATE_INITIALIZING, "n": STATE_NORMAL, "a": STATE_ANOMALY}
CODE_OF_STATE = {state: code for code, state in STATE_CODES.items()}


def state_letters(anomaly: np.ndarray, ready: np.ndarray | None = None) -> str:
    """The STATE_CODES string for many readings: "a" where `anomaly`, else "n"; "i" where not `ready`.

    >>> state_letters(np.array([True, False, False]), np.array([True, True, False]))
    'ani'
    """
    letters = np.where(anomaly, ord("a"), ord("n"))
    if ready is not None:
        letters = np.where(ready, letters, ord("i"))
    return letters.astype(np.uint8).tobytes().decode("ascii")
