"""The page binds 127.0.0.1 by default, and `workers/app.py` warns when told to serve on another
address without the password gate (the socket and TCP checks run on a live system in
test_foreign_file.py)."""

from __future__ import annotations

import logging
import os

import pytest

import workers.app as app_worker
from lib.config import load_config

pytestmark = pytest.mark.faults


class Execd(Exception):
    pass


def _run_app(monkeypatch, caplog, **env) -> list[str]:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen = []

    def fake_exec(path, args):
        seen.extend(args)
        raise Execd

    monkeypatch.setattr(os, "execv", fake_exec)
    caplog.set_level(logging.WARNING)
    with pytest.raises(Execd):
        app_worker.main([])
    return seen


def _warned(caplog) -> bool:
    return any(r.levelno >= logging.WARNING and "password" in r.getMessage() for r in caplog.records)


def test_page_binds_loopback_by_default(monkeypatch, caplog):
    assert load_config().app.address == "127.0.0.1"
    args = _run_app(monkeypatch, caplog)
    assert args[args.index("--server.address") + 1] == "127.0.0.1"
    assert not _warned(caplog)


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "::"])
def test_serving_beyond_this_machine_without_password_warns(monkeypatch, caplog, address):
    args = _run_app(monkeypatch, caplog, VIGIE_APP_ADDRESS=address)
    assert args[args.index("--server.address") + 1] == address
    assert _warned(caplog)


def test_no_warning_with_a_password_set(monkeypatch, caplog):
    _run_app(monkeypatch, caplog, VIGIE_APP_ADDRESS="0.0.0.0", VIGIE_APP_PASSWORD="s3cret-enough")
    assert not _warned(caplog)
