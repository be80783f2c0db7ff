"""Operator labels feed back: a flag the operator rejects makes that sensor's detector treat a
reading like it as normal from then on, while a clearly stranger reading is still flagged."""

import duckdb
import numpy as np

from lib.config import load_config
from lib.detect.detection import Judge
from lib.detect.evaluation import labelled_replay
from lib.detect.feedback import rejected_floors
from lib.store.reader import read_db
from lib.store.schema import init_db
from workers.detector import rejections_from_store

SENSOR = "porte"


def _config(tmp_path=None):
    overrides = {"detection": {"detectors": ["zscore"]}}
    if tmp_path is not None:
        overrides["paths"] = {"data_dir": str(tmp_path)}
    return load_config(env={}, overrides=overrides)


def _door_series():
    """Quiet readings with a door opening (a bump of 8 deviations) every 400 readings, and one
    real fault (40 deviations) near the end."""
    rng = np.random.default_rng(4)
    x = 20 + rng.normal(0, 0.5, 6000)
    bumps = np.arange(1000, 5600, 400)
    x[bumps] += 4.0
    x[5800] += 20.0
    return x, bumps


def test_a_rejected_flag_stops_flags_like_it_but_not_stranger_ones():
    x, bumps = _door_series()
    judge = Judge(_config())
    flags = []
    for lo in range(0, len(x), 200):
        codes, scores = judge.judge_sensors([(SENSOR, list(x[lo : lo + 200]), None)])[0]["zscore"]
        flags += [c == "a" for c in codes]
        if lo == 1000:
            # the operator rejects the first door opening's flag (its stored score)
            assert flags[bumps[0]]
            moved = judge.apply_floors({(SENSOR, "zscore"): scores[bumps[0] - lo]})
            assert moved and judge.threshold(SENSOR, "zscore") > scores[bumps[0] - lo]
    flags = np.array(flags)
    later = bumps[bumps > 1200]
    assert flags[later].sum() <= 1, "door openings like the rejected one are still flagged"
    assert flags[5800], "a stranger reading must still be flagged"


def test_replaying_a_labelled_series_shows_the_effect():
    x, bumps = _door_series()
    result = labelled_replay(_config(), SENSOR, x, {int(bumps[0]): None})["zscore"]
    assert result["rejected_like"] >= len(bumps) - 3  # without feedback: the doors keep flagging
    assert result["after_with"] <= result["after_without"] - (len(bumps) - 3)
    assert result["after_with"] >= 1  # the fault at the end is still there


def test_the_worker_reads_rejections_from_the_store_file(tmp_path):
    config = _config(tmp_path)
    init_db(config.db_path)
    with duckdb.connect(str(config.db_path)) as conn:
        conn.executemany(
            "INSERT INTO states VALUES (?, ?, ?, now(), ?, ?, ?)",
            [
                ("s1", 7, SENSOR, "zscore", "anomaly", 0.9993),
                ("s1", 7, SENSOR, "rule:range", "anomaly", 1.0),
                ("s1", 9, SENSOR, "zscore", "anomaly", 0.9999),
                ("s1", 11, SENSOR, "zscore", "anomaly", 0.99999),
            ],
        )
        conn.executemany(
            "INSERT INTO labels VALUES (?, ?, ?, now(), ?, ?, NULL, now())",
            [
                ("s1", 7, SENSOR, "rejected", None),
                ("s1", 9, SENSOR, "rejected", "zscore"),
                ("s1", 11, SENSOR, "confirmed", "zscore"),
            ],
        )
    with read_db(config.db_path) as conn:
        assert rejected_floors(conn) == {(SENSOR, "zscore"): 0.9999}
    feedback = rejections_from_store(config, __import__("logging").getLogger("test"))
    assert feedback() == {(SENSOR, "zscore"): 0.9999}
    # While the store runs it holds the file and answers named reads only: the same, through it.
    import lib.store.named  # noqa: F401  (registers the named reads, as the store worker does)
    from lib.page.queries import NAMED
    from lib.store.readserver import ReadServer, RemoteConnection, socket_path
    from lib.store.writer import Writer

    writer = Writer(config.db_path)
    server = ReadServer(writer.connection, config.db_path, NAMED).start()
    try:
        with read_db(config.db_path) as conn:
            assert isinstance(conn, RemoteConnection) and socket_path(config.db_path).exists()
            assert rejected_floors(conn) == {(SENSOR, "zscore"): 0.9999}
        assert feedback() == {(SENSOR, "zscore"): 0.9999}
    finally:
        server.close()
        writer.close()


def test_a_recorded_session_with_a_rejection_replays_from_the_command_line(tmp_path, capsys, monkeypatch):
    """`python -m workers.evaluate --session latest --labels` on a real DuckDB file."""
    from workers import evaluate as cli

    x, bumps = _door_series()
    config = _config(tmp_path)
    init_db(config.db_path)
    with duckdb.connect(str(config.db_path)) as conn:
        conn.execute("INSERT INTO sessions (session_id, port, baud, started_at) VALUES ('s1', 'sim', 9600, now())")
        conn.executemany(
            "INSERT INTO readings (session_id, seq, sensor, ts, value) VALUES ('s1', ?, ?, now(), ?)",
            [(i, SENSOR, float(v)) for i, v in enumerate(x)],
        )
        conn.execute(
            "INSERT INTO labels VALUES ('s1', ?, ?, now(), 'rejected', 'zscore', NULL, now())", [int(bumps[0]), SENSOR]
        )
    monkeypatch.setenv("VIGIE_PATHS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIGIE_DETECTION_DETECTORS", "zscore")
    assert cli.main(["--session", "latest", "--labels", "--json"]) == 0
    result = __import__("json").loads(capsys.readouterr().out)[SENSOR]["zscore"]
    assert result["after_with"] < result["after_without"] and result["rejected_like"] >= len(bumps) - 3
