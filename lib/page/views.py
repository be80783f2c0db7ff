"""The page's views: one file each under `views/`, found by the entry point (`app.py`).

A view file starts with constants the entry point reads without running the file:

- `TITLE`: its name in the sidebar (required);
- `ORDER`: its place in the sidebar, smaller first (default 100, then by file name);
- `FILTERS`: True when it uses the sidebar's shared filters (session, sensors, algorithms, time
  range), which the entry point then draws above it (default False);
- `NEEDS_DATABASE`: False when it has something to show before the store has created the
  database (default True: the entry point says "No data yet" instead).

Adding a view is adding a file. Streamlit runs the file as the page on every rerun; the file
reads what the entry point prepared (configuration, database, filters) with `current()`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lib.config import Config
from lib.page.clock import Clock
from lib.page.queries import Filters
from lib.page.sensors import SensorBook

_CONTEXT_KEY = "_vigie_context"
_DECLARED = {
    "TITLE": (str, "a string"),
    "ORDER": (int, "a whole number"),
    "FILTERS": (bool, "True or False"),
    "NEEDS_DATABASE": (bool, "True or False"),
}


@dataclass(frozen=True)
class View:
    name: str  # the file's stem, also the view's URL path
    path: Path
    title: str
    order: int = 100
    filters: bool = False
    needs_database: bool = True


def read_declarations(path: Path) -> dict:
    """The view constants assigned at the top level of `path`, read without running it."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in _DECLARED
        ):
            name = node.targets[0].id
            kind, said = _DECLARED[name]
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = ast.unparse(node.value)
            if type(value) is not kind:
                raise ValueError(f"{path}: {name} must be {said} written out, got {value!r}")
            found[name] = value
    return found


def find_views(folder: Path) -> list[View]:
    """Every view file in `folder` (names starting with `_` are helpers), in sidebar order."""
    found = []
    for path in sorted(Path(folder).glob("*.py")):
        if path.name.startswith("_"):
            continue
        declared = read_declarations(path)
        if "TITLE" not in declared:
            raise ValueError(f'{path}: a view file needs TITLE = "..." at its top')
        found.append(
            View(
                name=path.stem,
                path=path,
                title=declared["TITLE"],
                order=declared.get("ORDER", 100),
                filters=declared.get("FILTERS", False),
                needs_database=declared.get("NEEDS_DATABASE", True),
            )
        )
    return sorted(found, key=lambda v: (v.order, v.name))


@dataclass(frozen=True)
class Context:
    """What the entry point prepared for the view of this run."""

    config: Config
    clock: Clock  # the operator's time zone: every time shown, typed or picked
    db: str  # the DuckDB file, the key of every cached read
    sessions: pd.DataFrame  # every session, newest first
    sensors: list[str]  # every sensor with readings, in the operator's order, hidden ones left out
    detectors: list[str]  # every algorithm with verdicts
    filters: Filters | None  # the shared filters, for views that declared FILTERS = True
    pages: dict = field(default_factory=dict)  # view name -> its st.Page, for st.page_link
    book: SensorBook = field(default_factory=lambda: SensorBook({}))  # labels, units, ranges, order


_AS_OF_SLOT = "_vigie_as_of_slot"


def as_of_bar(clock) -> None:
    """For a view that does not refresh by itself: a Refresh button and, once the view has run
    (the entry point calls `fill_as_of`; a view that ends early calls `stop`), when its figures
    were read."""
    import streamlit as st

    slot, button = st.columns([9, 1], vertical_alignment="center")
    if button.button("Refresh", key="refresh_view", help="Read every figure of this view again."):
        st.cache_data.clear()
        st.rerun()
    st.session_state[_AS_OF_SLOT] = (slot.empty(), clock)


def fill_as_of() -> None:
    from datetime import datetime, timezone

    import streamlit as st

    from lib.page.reads import oldest_read

    slot, clock = st.session_state.pop(_AS_OF_SLOT, (None, None))
    read_at = oldest_read()
    if slot is None or read_at is None:
        return
    at = datetime.fromtimestamp(read_at, timezone.utc).replace(tzinfo=None)
    slot.caption(f"As of {clock.text(at)} ({clock.name}).")


def stop() -> None:
    """`st.stop()` for a view with an `as_of_bar`: the time is written first (nothing can be
    written once the run is stopped)."""
    import streamlit as st

    fill_as_of()
    st.stop()


def publish(context: Context) -> None:
    import streamlit as st

    st.session_state[_CONTEXT_KEY] = context


def current() -> Context:
    import streamlit as st

    return st.session_state[_CONTEXT_KEY]


def page_title(open_events: int) -> str:
    """The browser tab's title: the count of events not resolved, so that a background tab tells
    the operator something is up.

    >>> page_title(0), page_title(3)
    ('Vigie', '(3) Vigie')
    """
    return f"({open_events}) Vigie" if open_events else "Vigie"


def show_open_events(open_events: int) -> None:
    """Set the tab's title (Streamlit lets a page set it again on every run, fragments included)."""
    import streamlit as st

    st.set_page_config(page_title=page_title(open_events))
