import os

import pytest

from lib.transport.broker import Broker


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    """Each test gets its own data folder; no VIGIE_* setting leaks in from the caller's shell."""
    for var in list(os.environ):
        if var.startswith("VIGIE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("VIGIE_PATHS_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def broker(tmp_path):
    """A Kafka-protocol broker (Tansu) on 127.0.0.1, stopped after the test."""
    b = Broker(log_path=tmp_path / "broker.log").start()
    yield b
    b.stop()
