"""The operator page renders with data (Streamlit's AppTest), on a real DuckDB file."""
from datetime import datetime, timezone

import pytest
from streamlit.testing.v1 import AppTest

from lib.config import PROJECT_ROOT, load_config
from lib.storage import Batch, init_db, write_batch


@pytest.fixture
def prepared_db():
    config = load_config()
    init_db(config.db_path)
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    batch = Batch()
    batch.sessions.append({"event": "start", "session": "s1", "port": "/dev/pts/9", "baud": 9600,
                           "host": "h", "ts_us": now_us - 60_000_000})
    for i in range(60):
        ts = now_us - (60 - i) * 1_000_000
        value = 60.0 if i == 45 else 50.0 + 0.1 * (i % 3)
        batch.readings[("s1", i + 1)] = ("humidite", ts, value)
        for det in ("dbscan", "iforest"):
            state = "initializing" if i < 20 else ("anomaly" if i == 45 else "normal")
            batch.states[("s1", i + 1, det)] = ("humidite", ts, state, None if i < 20 else 0.9 if i == 45 else 0.1)
    write_batch(config.db_path, batch)
    return config


def test_app_renders_live_charts_with_data(prepared_db):
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["humidite"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Readings"] == "60" and metrics["States"] == "120"


def test_app_explains_an_empty_system():
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception
    assert "No data yet" in at.info[0].value
