"""CSV exports, safe to open in a spreadsheet.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read by Excel,
LibreOffice and Google Sheets as a formula (OWASP "CSV injection"); sensor and session names come
from the wire, so such a cell is prefixed with a single quote, which makes it plain text. Numbers
are written as numbers (a negative reading stays a negative number).
"""

from __future__ import annotations

import csv

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell):
    """The cell, made plain text if a spreadsheet would read it as a formula.

    >>> neutralise("=1+1"), neutralise("-3"), neutralise("humidite"), neutralise(-3.5)
    ("'=1+1", "'-3", 'humidite', -3.5)
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every text cell and column name neutralised."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralise)
    out.columns = [neutralise(str(c)) for c in out.columns]
    return out


def to_csv(df: pd.DataFrame, clock=None) -> bytes:
    """UTF-8 CSV of `df`, injection-safe, timestamps in ISO 8601 (UTC). With the operator's
    `clock` (lib.page.clock.Clock), the time `ts` is also given on it, with its offset, in a
    `local_time` column beside it (what the page showed)."""
    out = safe_frame(df)
    if clock is not None and "ts" in out.columns and pd.api.types.is_datetime64_any_dtype(out["ts"]):
        local = out["ts"].dt.tz_localize("UTC").dt.tz_convert(clock.zone)
        text = local.dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z").str.replace(r"(\d\d)(\d\d)$", r"\1:\2", regex=True)
        out.insert(out.columns.get_loc("ts") + 1, "local_time", text)
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Text is always quoted: a cell with a bare carriage return then stays one cell.
    return out.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")
