"""Sensors are the operator's: `[sensors.<name>]` label, unit, expected range, hidden, order.
The configuration is checked at start-up; on the page a hidden sensor is gone from every view and
count, the others come in the operator's order under their labels."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from lib.config import PROJECT_ROOT, ConfigError, Sensor, load_config
from lib.page.sensors import SensorBook
from lib.store.reader import read_db
from tests.appdata import prepare

SETTINGS = {
    "pression": {"label": "Pressure", "unit": "hPa", "order": 1},
    "humidite": {"label": "Humidité", "unit": "%", "min": 20, "max": 90},
    "temperature": {"hidden": True},
}


def test_the_sensor_tables_are_read_in_the_files_order_and_checked(tmp_path):
    toml = tmp_path / "vigie.toml"
    toml.write_text(
        '[sensors.temperature]\nlabel = "Température"\nunit = "°C"\n\n'
        '[sensors.humidite]\nhidden = true\n\n[sensors."=odd name"]\norder = 3\nmin = -1\n'
    )
    config = load_config(toml, env={})
    assert list(config.sensors) == ["temperature", "humidite", "=odd name"]
    assert config.sensors["temperature"] == Sensor(label="Température", unit="°C")
    assert config.sensors["=odd name"] == Sensor(order=3, min=-1.0)
    # the environment adds or replaces a sensor's table
    config = load_config(toml, env={"VIGIE_SENSORS": json.dumps({"humidite": {"hidden": False, "unit": "%"}})})
    assert config.sensors["humidite"] == Sensor(unit="%")
    for table, message in (
        ('[sensors.a]\nlable = "x"\n', r"\[sensors\.a\]: unknown key\(s\): lable"),
        ("[sensors.a]\nmin = 5\nmax = 1\n", r"\[sensors\.a\]: min \(5\) must be below max \(1\)"),
        ('[sensors.a]\nhidden = "yes"\n', r"\[sensors\.a\] hidden: expected true or false"),
        ("sensors = 3\n", r"\[sensors\]: expected a table per sensor"),
    ):
        toml.write_text(table)
        with pytest.raises(ConfigError, match=message):
            load_config(toml, env={})
    with pytest.raises(ConfigError, match="VIGIE_SENSORS: expected a JSON object"):
        load_config(env={"VIGIE_SENSORS": "{oops"})


def test_the_operators_order_then_the_files_then_the_unknown_by_name():
    book = SensorBook(load_config(env={"VIGIE_SENSORS": json.dumps(SETTINGS)}).sensors)
    assert book.shown(["temperature", "emperature", "humidite", "pression", "aaa"]) == [
        "pression",
        "humidite",
        "aaa",
        "emperature",
    ]
    assert (book.label("humidite"), book.title("humidite"), book.expected("humidite")) == (
        "Humidité",
        "Humidité (%)",
        (20.0, 90.0),
    )
    assert book.title("aaa") == "aaa" and book.hidden == ("temperature",)


@pytest.fixture
def configured(monkeypatch):
    monkeypatch.setenv("VIGIE_SENSORS", json.dumps(SETTINGS))
    config = load_config()
    return config, prepare(config.db_path)


def run(path: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def tables(at) -> list:
    return [d.value for d in at.dataframe]


def test_a_hidden_sensor_is_gone_from_every_view_and_count(configured):
    config, _ = configured
    at = run("views/live.py")
    headings = [s.value for s in at.subheader]
    assert headings[:2] == ["Pressure (hPa)", "Humidité (%)"] and not any("temperature" in h for h in headings)
    assert at.multiselect(key="live_sensors").options == ["Pressure", "Humidité", "=cmd|' /C calc'!A0"]
    at = run("views/anomalies.py")
    assert at.sidebar.multiselect(key="sensors").options == ["Pressure", "Humidité", "=cmd|' /C calc'!A0"]
    shown = next(t for t in tables(at) if "detector" in t.columns)
    assert "temperature" not in set(shown["sensor"]) and "Humidité" in set(shown["sensor"])
    with read_db(config.db_path) as conn:
        want = conn.execute(
            "SELECT count(*) FROM states WHERE state = 'anomaly' AND sensor <> 'temperature'"
        ).fetchone()[0]
        readings = conn.execute("SELECT count(*) FROM readings WHERE sensor <> 'temperature'").fetchone()[0]
    assert len(shown) == want
    assert any(f"among {readings:,} readings" in c.value for c in at.caption)
    at = run("views/compare.py")
    judged = next(t for t in tables(at) if "judged" in t.columns)
    with read_db(config.db_path) as conn:
        by_hand = dict(
            conn.execute(
                "SELECT detector, count(*) FROM states WHERE state <> 'initializing' "
                "AND sensor <> 'temperature' GROUP BY 1"
            ).fetchall()
        )
    assert dict(zip(judged["detector"], judged["judged"])) == by_hand
    assert "temperature" not in at.selectbox(key="replay_sensor").options
    at = run("views/labels.py")
    assert "temperature" not in at.selectbox(key="missed_sensor").options
    at = run("views/health.py")
    sensors = next(t for t in tables(at) if "age_s" in t.columns)
    assert list(sensors["sensor"]) == ["pression", "humidite", "=cmd|' /C calc'!A0"]
