"""Rows gathered from the transport for one write to the store, each table's under its name.

Keys dedupe replays inside a batch (the watermarks and primary keys dedupe them across batches;
see lib.store.writer). Times are microseconds since the epoch (UTC) until the write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from lib.states import CODE_OF_STATE, STATE_CODES
from lib.store.events import snapshot_frame

_CODE_INDEX = np.full(256, -1, dtype=np.int8)
for _i, _code in enumerate(STATE_CODES):
    _CODE_INDEX[ord(_code)] = _i
_STATE_DICTIONARY = pa.array(list(STATE_CODES.values()))


@dataclass
class Batch:
    """Rows gathered from the transport for one write, a field per table (see `frame`)."""

    readings: dict = field(default_factory=dict)  # (session, seq) -> (sensor, ts_us, value)
    states: dict = field(default_factory=dict)  # (session, seq, detector) -> (sensor, ts_us, state, score)
    rejects: dict = field(default_factory=dict)  # (session, seq) -> (ts_us, reason, raw)
    sessions: list = field(default_factory=list)  # session events, in order
    truth: dict = field(default_factory=dict)  # (run, sensor, kind, start_us) -> end_us
    labels: dict = field(default_factory=dict)  # (session, seq) -> (sensor, ts_us, verdict, detector, note, made_us)
    events: dict = field(default_factory=dict)  # event id -> its latest snapshot (lib.detect.events payload)
    event_actions: list = field(default_factory=list)  # operators' acknowledgements and resolutions, in order
    # states as columns (what the detectors send): no Python object per row. One run per
    # add_states call: (session, sensor, detector, rows); seq, ts, codes and scores per row.
    _runs: list = field(default_factory=list)
    _seq: list = field(default_factory=list)
    _ts: list = field(default_factory=list)
    _codes: list = field(default_factory=list)
    _scores: list = field(default_factory=list)
    _state_high: dict = field(default_factory=dict)  # (session, sensor, detector) -> highest seq here

    def __len__(self) -> int:
        return (
            len(self.readings)
            + len(self.states)
            + len(self._seq)
            + len(self.rejects)
            + len(self.sessions)
            + len(self.truth)
            + len(self.labels)
            + len(self.events)
            + len(self.event_actions)
        )

    def add_states(
        self,
        sensor: str,
        sessions: str | list[str],
        seqs: list[int],
        ts_us: list[int],
        detector: str,
        codes: str,
        scores: list,
    ) -> None:
        """One detector's states (`codes`: a letter of STATE_CODES per reading) for readings of
        one sensor, in the sensor's order. Rows at or below the highest seq already in the batch
        for their (session, sensor, detector) are a replay and are dropped, as the watermarks
        drop one across batches."""
        if not isinstance(sessions, str):  # a message spanning sessions: row by row
            for i, session in enumerate(sessions):
                self.add_states(
                    sensor, session, seqs[i : i + 1], ts_us[i : i + 1], detector, codes[i], scores[i : i + 1]
                )
            return
        key = (sessions, sensor, detector)
        high = self._state_high.get(key)
        if high is not None and seqs[0] <= high:
            keep = [i for i, q in enumerate(seqs) if q > high]
            if not keep:
                return
            seqs, ts_us = [seqs[i] for i in keep], [ts_us[i] for i in keep]
            codes, scores = "".join(codes[i] for i in keep), [scores[i] for i in keep]
        self._state_high[key] = seqs[-1]
        self._runs.append((sessions, sensor, detector, len(seqs)))
        self._seq.extend(seqs)
        self._ts.extend(ts_us)
        self._codes.append(codes)
        self._scores.extend(scores)

    def frame(self, table: str, columns: tuple[str, ...]) -> pa.Table | None:
        """This batch's rows for `table` as an Arrow table (key fields, then value fields, named
        `columns`), or None when there are none. The states come as columns already."""
        if table == "states":
            return self.state_table()
        if table == "events":
            return snapshot_frame(self.events.values()) if self.events else None
        rows = getattr(self, table)
        return _frame(rows, list(columns)) if rows else None

    def judged_readings(self) -> Iterator[tuple[str, int, int]]:
        """(session, seq, ts_us) of each state row added with `add_states`."""
        at = 0
        for session, _, _, n in self._runs:
            for seq, ts in zip(self._seq[at : at + n], self._ts[at : at + n]):
                yield session, seq, ts
            at += n

    def state_table(self) -> pa.Table | None:
        """The state rows as an Arrow table; the repeated strings as dictionary columns built
        from the runs (numpy, not a Python string per row)."""
        for (session, seq, detector), (sensor, ts, state, score) in self.states.items():  # rows one by one (tests)
            self.add_states(sensor, session, [seq], [ts], detector, CODE_OF_STATE[state], [score])
        self.states.clear()
        if not self._seq:
            return None
        counts = np.array([r[3] for r in self._runs])

        def runs(i: int) -> pa.DictionaryArray:
            values = [r[i] for r in self._runs]
            names = list(dict.fromkeys(values))
            index = {v: k for k, v in enumerate(names)}
            codes = np.repeat(np.array([index[v] for v in values], dtype=np.int32), counts)
            return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, type=pa.string()))

        letters = np.frombuffer("".join(self._codes).encode("ascii"), dtype=np.uint8)
        state_index = _CODE_INDEX[letters]
        if (state_index < 0).any():
            raise ValueError(f"unknown state code(s) {sorted(set(chr(c) for c in letters[state_index < 0]))}")
        return pa.table(
            {
                "session_id": runs(0),
                "seq": pa.array(self._seq, type=pa.int64()),
                "detector": runs(2),
                "sensor": runs(1),
                "ts": pa.array(self._ts, type=pa.int64()),
                "state": pa.DictionaryArray.from_arrays(pa.array(state_index), _STATE_DICTIONARY),
                "score": pa.array(self._scores, type=pa.float64()),
            }
        )


def _frame(rows: dict, names: list[str]) -> pa.Table:
    """An Arrow table from {key tuple: value tuple}, column by column: about twice as fast as a
    pandas frame built from row tuples, and DuckDB scans Arrow without a copy."""
    keys, vals = list(rows.keys()), list(rows.values())
    cols = [[k[i] for k in keys] for i in range(len(keys[0]))]
    if isinstance(vals[0], tuple):
        cols += [[v[i] for v in vals] for i in range(len(vals[0]))]
    else:
        cols.append(vals)
    return pa.table({name: pa.array(col) for name, col in zip(names, cols)})
