import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    """Each test gets its own data folder; no VIGIE_* setting leaks in from the caller's shell."""
    for var in list(os.environ):
        if var.startswith("VIGIE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("VIGIE_PATHS_DATA_DIR", str(tmp_path / "data"))
