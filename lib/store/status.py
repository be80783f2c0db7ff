"""The store's last write, for the page: `<data>/run/store.json`.

The page can see that readings arrive (the producers' status files) but not whether they reach
the database: a store stuck on a full disk or a lock keeps answering queries with old data. So
the store records when its last write committed (at most once a second), and the page compares.

>>> import tempfile; d = Path(tempfile.mkdtemp())
>>> s = StoreStatus(d, clock=lambda: 100.0); s.wrote(12); read_store_status(d)["messages"]
12
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "store.json"
WRITE_EVERY_S = 1.0


class StoreStatus:
    def __init__(self, run_dir: str | os.PathLike, clock=time.time):
        self.path = Path(run_dir) / FILE_NAME
        self.clock = clock
        self.messages = 0
        self._written = float("-inf")
        self._failing = False

    def wrote(self, n: int) -> None:
        """A write of `n` messages committed (the store's `on_flush`)."""
        self.messages += n
        now = self.clock()
        if now - self._written < WRITE_EVERY_S:
            return
        self._written = now
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(
                json.dumps({"pid": os.getpid(), "last_write_at": now, "messages": self.messages}), encoding="utf-8"
            )
            os.replace(tmp, self.path)
        except OSError as exc:
            # For display only: never let it stop a write.
            if not self._failing:
                log.error("cannot write the store status %s: %s", self.path, exc)
            self._failing = True
            return
        self._failing = False


def read_store_status(run_dir: str | os.PathLike) -> dict | None:
    """{"pid", "last_write_at" (Unix seconds), "messages"}, or None before the store's first write."""
    try:
        return json.loads((Path(run_dir) / FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
