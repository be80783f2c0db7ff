import os
import subprocess
import sys

import pytest

from lib.config import PROJECT_ROOT, ConfigError, load_config
from lib.detect.detection import check_detection_config


def test_defaults_match_the_seed():
    c = load_config(env={})
    assert c.serial.baud == 9600 and c.detection.window == 20 and c.transport.kind == "embedded"
    assert c.app.address == "127.0.0.1"


def test_environment_overrides_file(tmp_path):
    c = load_config(env={"VIGIE_SERIAL_BAUD": "115200", "VIGIE_DETECTION_DETECTORS": "dbscan"})
    assert c.serial.baud == 115200 and c.detection.detectors == ("dbscan",)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[serial]\nbaud = 'fast'\n", "[serial] baud"),
        ("[serial]\nbuad = 9600\n", "buad"),
        ("[seriall]\n", "seriall"),
        ("[transport]\nkind = 'mqtt'\n", "kind"),
        ("[serial]\nbaud = -1\n", "positive"),
        ("[serial\n", "not valid TOML"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as exc:
        load_config(path, env={})
    assert needle in str(exc.value)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="VIGIE_SERIAL_BAUD"):
        load_config(env={"VIGIE_SERIAL_BAUD": "fast"})
    with pytest.raises(ConfigError, match="VIGIE_SERIAL_SPEED"):
        load_config(env={"VIGIE_SERIAL_SPEED": "1"})


def test_unknown_detector_or_parameter_stops_start_up():
    with pytest.raises(ConfigError, match="unknown detector 'dbscna'"):
        check_detection_config(load_config(env={"VIGIE_DETECTION_DETECTORS": "dbscna"}))
    with pytest.raises(ConfigError, match="epsilon"):
        check_detection_config(load_config(env={}, overrides={"detection": {"params": {"dbscan": {"epsilon": 1}}}}))


@pytest.mark.parametrize(
    "detection, needle",
    [
        ({"sensors": {"hum": []}}, "[detection.sensors.hum]: expected a table"),
        ({"sensors": {"hum": 0}}, "[detection.sensors.hum]: expected a table"),
        ({"sensors": {"hum": {"detectors": "dbscan"}}}, "[detection.sensors.hum] detectors: expected a list"),
        ({"sensors": {"hum": {"params": {"dbscan": 1.0}}}}, "[detection.sensors.hum] params: dbscan must be a table"),
        ({"sensors": {"hum": {"params": [1]}}}, "[detection.sensors.hum] params: expected a table"),
        ({"params": {"dbscan": 0}}, "[detection.params]: dbscan must be a table"),
    ],
)
def test_malformed_detection_tables_stop_start_up_with_their_place(detection, needle):
    """Found by the config fuzzer: a sensor's override that is not a table raised AttributeError."""
    with pytest.raises(ConfigError) as exc:
        check_detection_config(load_config(env={}, overrides={"detection": detection}))
    assert needle in str(exc.value)


def test_an_unknown_vigie_variable_stops_start_up_naming_the_nearest_key(tmp_path):
    """A misspelt variable used to be ignored, and the default used without a word."""
    data = tmp_path / "data"
    r = subprocess.run(
        [sys.executable, "-m", "workers.launch"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(data), VIGIE_DETECTOR_WINDOW="30"),
    )
    assert r.returncode == 2
    assert "environment VIGIE_DETECTOR_WINDOW: no such setting; did you mean VIGIE_DETECTION_WINDOW?" in r.stderr
    assert "Traceback" not in r.stderr and not data.exists(), "nothing started"
    # The variables of the programs themselves are not settings, and are let through.
    assert (
        load_config(
            env={"VIGIE_CONFIG": "", "VIGIE_DATA_DIR": "/x", "VIGIE_LOG_LEVEL": "DEBUG", "VIGIE_DETECTION_WINDOW": "30"}
        ).detection.window
        == 30
    )
    with pytest.raises(ConfigError, match="VIGIE_SERIALPORT: no such setting; did you mean VIGIE_SERIAL_PORT"):
        load_config(env={"VIGIE_SERIALPORT": "/dev/ttyACM0"})
