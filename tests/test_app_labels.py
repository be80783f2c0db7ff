"""Labels made by the operator reach DuckDB through the transport and the real store loop."""

import threading
from datetime import datetime

from lib.config import load_config
from lib.messages import INTERNAL, LABELS
from lib.page.labels import CONFIRMED, MISSED, REJECTED, Label, send_labels
from lib.store.reader import read_db
from lib.store.schema import init_db
from lib.store.sink import run_store
from lib.transport import open_transport


def store_until_drained(config):
    """Run the store's loop until it has written what is on the bus, as workers/store.py does."""
    transport = open_transport(config)
    consumer = transport.consumer("store", topics=INTERNAL, sensors=True)
    stop = threading.Event()
    try:
        stop.set()  # drain what is there, then return
        return run_store(config.db_path, consumer, stop, flush_interval=0.05)
    finally:
        consumer.close()
        transport.close()


def test_labels_topic_is_internal():
    assert LABELS in INTERNAL and LABELS.startswith("_vigie.")


def test_a_label_sent_by_the_app_is_stored_and_the_latest_verdict_wins():
    config = load_config()
    init_db(config.db_path)
    ts = datetime(2026, 11, 28, 12, 0, 0, 250000)
    send_labels(
        config,
        [
            Label("s1", 7, "humidite", ts, CONFIRMED, "dbscan", "=cmd|' /C calc'!A0"),
            Label("s1", 9, "humidite", ts, MISSED),
        ],
    )
    assert store_until_drained(config) == 2
    send_labels(config, [Label("s1", 7, "humidite", ts, REJECTED, "dbscan")])
    assert store_until_drained(config) == 1
    with read_db(config.db_path) as conn:
        rows = conn.execute("SELECT session_id, seq, sensor, ts, verdict, detector FROM labels ORDER BY seq").fetchall()
    assert rows == [("s1", 7, "humidite", ts, REJECTED, "dbscan"), ("s1", 9, "humidite", ts, MISSED, None)]


def test_an_unknown_verdict_is_refused():
    import pytest

    with pytest.raises(ValueError):
        Label("s1", 1, "t", datetime(2026, 1, 1), "maybe").message()
