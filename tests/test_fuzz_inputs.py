"""Bad input: the configuration loader and scenario files, fuzzed with hypothesis. Any
input either loads or fails with the documented error (ConfigError / ScenarioError) carrying a
message; nothing else escapes. A loaded scenario also plays without crashing."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.config import ConfigError, load_config
from lib.detect.detection import check_detection_config
from lib.ingest.simulator import ScenarioError, SignalModel, load_scenario, scenario_from_dict

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SECTIONS = ["paths", "serial", "simulator", "transport", "store", "detection", "app", "bogus"]
KEYS = [
    "data_dir",
    "database",
    "port",
    "baud",
    "timeout",
    "max_line",
    "rate",
    "seed",
    "scenario",
    "count",
    "ledger",
    "kind",
    "bootstrap_servers",
    "partitions",
    "flush_interval",
    "quiet_flush_interval",
    "max_batch",
    "bus_retention_s",
    "retention_days",
    "retention_export",
    "retention_check_s",
    "window",
    "detectors",
    "params",
    "sensors",
    "rules",
    "address",
    "refresh_s",
    "password",
    "dbscan",
    "eps",
    "threshold",
    "x",
    "Ünï",
]

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["embedded", "kafka", "dbscan", "iforest", "parquet", "127.0.0.1", "-1", "0"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=10,
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(doc: dict) -> str:
    out = []
    for section, table in doc.items():
        out.append(f"[{section}]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


configs = st.dictionaries(
    st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEYS), values, max_size=4), max_size=4
)


def _load(path, env=None):
    try:
        config = load_config(path, env=env or {})
        check_detection_config(config)
        return config
    except ConfigError as exc:
        assert str(exc), "a ConfigError without a message"
        return None


@FUZZ
@given(doc=configs)
def test_any_structured_config_loads_or_fails_with_config_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "vigie.toml"
    path.write_text(toml_text(doc), encoding="utf-8")
    _load(path)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_config_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "vigie.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(path)


@FUZZ
@given(
    env=st.dictionaries(
        st.builds(lambda s, k: f"VIGIE_{s.upper()}_{k.upper()}", st.sampled_from(SECTIONS), st.sampled_from(KEYS)),
        st.text(max_size=30),
        max_size=4,
    )
)
def test_any_environment_override_loads_or_fails_with_config_error(tmp_path_factory, env):
    env = {k: v.replace("\x00", "") for k, v in env.items()}
    _load(None, env)


SENSOR_KEYS = [
    "base",
    "amplitude",
    "period_s",
    "noise",
    "decimals",
    "name",
    "bogus",
    "harmonic",
    "phase_s",
    "drift_sd",
    "drift_s",
    "setpoints",
    "setpoint_every_s",
    "setpoint_ramp_s",
    "adc_bits",
    "adc_min",
    "adc_max",
]
ANOMALY_KEYS = ["kind", "sensor", "every_s", "duration_s", "magnitude", "bogus"]
names = st.one_of(
    st.sampled_from(["humidite", "t", "a'b", "", "_vigie.x", "a b", "x" * 300, "..", "é"]), st.text(max_size=10)
)
scenario_dicts = st.fixed_dictionaries(
    {},
    optional={
        "sensors": st.one_of(
            values,
            st.dictionaries(
                names, st.one_of(values, st.dictionaries(st.sampled_from(SENSOR_KEYS), values, max_size=5)), max_size=3
            ),
        ),
        "anomalies": st.one_of(
            values,
            st.lists(
                st.one_of(
                    values,
                    st.dictionaries(
                        st.sampled_from(ANOMALY_KEYS),
                        st.one_of(values, names, st.sampled_from(["spike", "drift", "dropout"])),
                        max_size=5,
                    ),
                ),
                max_size=3,
            ),
        ),
        "rate": values,
        "spacing_s": values,
        "bogus": values,
    },
)


def _play(scenario) -> None:
    model = SignalModel(scenario, seed=1)
    for i in range(30):
        model.line(scenario.sensors[i % len(scenario.sensors)], i * 0.5)


@FUZZ
@given(raw=scenario_dicts)
def test_any_scenario_loads_and_plays_or_fails_with_scenario_error(raw):
    try:
        scenario = scenario_from_dict(raw, "fuzz")
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz"), str(exc)
        return
    _play(scenario)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_scenario_file_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("scn") / "s.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        _play(load_scenario(path))
    except ScenarioError as exc:
        assert str(path) in str(exc)
