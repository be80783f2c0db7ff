"""Configuration in one place: `vigie.toml`, then environment overrides, checked at start-up.

Every setting has a typed default below. A file or environment value with an unknown key or a
value of the wrong type stops start-up with a message naming the key, rather than surfacing later
as an odd behaviour in one worker.

Environment overrides are `VIGIE_<SECTION>_<KEY>` (for example `VIGIE_SERIAL_BAUD=115200`,
`VIGIE_PATHS_DATA_DIR=/tmp/vigie`); `VIGIE_CONFIG` names another file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = PROJECT_ROOT / "vigie.toml"


class ConfigError(ValueError):
    """A bad configuration key or value; the message names it."""


@dataclass(frozen=True)
class Paths:
    data_dir: str = "data"
    # The DuckDB file ("": vigie.duckdb in the data folder); relative paths are under the data folder.
    database: str = ""


@dataclass(frozen=True)
class Serial:
    # One port or a list, one producer each (lib.ingest.boards): "sim" (the simulated Arduino's
    # pseudo-terminal, published under the data folder), "sim:NAME" (another simulated board
    # playing data/scenarios/NAME.toml), "auto" (every Arduino-like device), or a device path.
    port: tuple[str, ...] = ("sim",)
    baud: int = 9600
    timeout: float = 0.5
    max_line: int = 512
    # The sensors a deployment has: any other name is a reject (`unknown_sensor`). Empty: any
    # name, but a new one is stored only once it has sent `new_sensor_lines` well-formed lines
    # (then all of them), so a line torn by opening mid-line is not a sensor for ever.
    sensors: tuple[str, ...] = ()
    new_sensor_lines: int = 3
    unconfirmed_after_s: float = 30.0  # a new name that stops short of that: its lines become rejects
    max_sensors: int = 1000  # distinct names per producer; more are rejects (`too_many_sensors`)
    max_held_lines: int = 200_000  # lines held in memory while the transport cannot write


@dataclass(frozen=True)
class Simulator:
    rate: float = 20.0
    seed: int = 42
    scenario: str = "data/scenarios/demo.toml"
    count: int = 0  # lines to write before going quiet (0: never stop)
    ledger: str = ""  # a file recording every line written, for tests to compare with the store
    replay: str = ""  # a NAB-format CSV (timestamp,value) to play as one sensor instead of the scenario
    replay_sensor: str = ""  # the replayed sensor's name ("": from the file name)
    speed: float = 1.0  # replay speed: 1 is the file's own pace
    unplug_s: float = 2.0  # how long SIGUSR1 unplugs the simulated board


@dataclass(frozen=True)
class Transport:
    kind: str = "embedded"
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = 1
    max_poll_interval_ms: int = 300_000
    spool_max_bytes: int = 256 * 1024 * 1024
    # Kafka only (see docs/kafka.md): failure detection, new-topic discovery, topic creation.
    session_timeout_ms: int = 10_000
    metadata_max_age_ms: int = 5_000
    replication_factor: int = -1  # -1: the broker's default.replication.factor
    # Kafka: many readings of a sensor per record (docs/kafka.md); false: one record per
    # reading, the original producer's format (docs/origins.md), for consumers that expect it.
    kafka_batch: bool = True


@dataclass(frozen=True)
class Store:
    flush_interval: float = 0.1
    # Under light load a small batch may wait this long (seconds) instead: fewer, larger writes.
    quiet_flush_interval: float = 0.5
    max_batch: int = 50_000
    bus_retention_s: float = 3600.0
    # Readings, states and rejects older than this many days leave the DuckDB file (0: keep all),
    # exported first to <data>/export/ as parquet or csv ("none": deleted only).
    retention_days: float = 0.0
    retention_export: str = "parquet"
    retention_check_s: float = 600.0


@dataclass(frozen=True)
class Detection:
    window: int = 20
    detectors: tuple[str, ...] = ("novelty", "likelihood", "dbscan", "iforest")
    # Per-detector parameters, `[detection.params.<name>]`; checked by the detector registry.
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Per-sensor overrides, `[detection.sensors.<sensor>]` with `detectors` and/or `params`.
    sensors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Threshold rules, `[detection.rules.<sensor or "*">]`.
    rules: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {"*": {"no_data_factor": 10.0, "stuck_factor": 3.0}}
    )


@dataclass(frozen=True)
class Events:
    """How flagged readings make anomaly events (lib.detect.events.Policy, whose keys these are)."""

    min_agree: int = 1
    quiet_s: float = 30.0
    quiet_n: int = 0
    base_severity: str = "warning"
    severity_from: tuple[str, ...] = ("agree", "score", "rule")
    critical_agree: int = 2
    critical_score: float = 0.0
    critical_rules: tuple[str, ...] = ("range", "no_data")
    # Per-sensor overrides, `[events.sensors.<sensor>]` with any of the keys above.
    sensors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Alerts:
    """Notifications of events (lib.alerts): channels, routes and when to hold back."""

    page_url: str = ""  # links in notifications ("": http://<[app] address>:<[app] port>)
    min_severity: str = "warning"  # events below it notify no one
    quiet_hours: str = ""  # e.g. "22:00-07:00" in [app] timezone: only quiet_min_severity gets through
    quiet_min_severity: str = "critical"
    group_wait_s: float = 0.2  # a channel's first message waits this long for others to join it
    group_interval_s: float = 60.0  # then at most one message per channel per this many seconds
    retry_max_s: float = 60.0  # the longest wait between two tries of a delivery
    give_up_s: float = 86400.0  # a delivery still failing after this is marked failed
    timeout_s: float = 10.0  # one try of a delivery (HTTP request or SMTP session)
    # `[alerts.channels.<name>]` (kind = "webhook" or "email") and `[alerts.routes.<name>]`.
    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    routes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class App:
    address: str = "127.0.0.1"
    port: int = 8501
    refresh_s: float = 2.0
    password: str = ""
    # The page shows times in this IANA zone (e.g. "Europe/Paris"); "": this machine's zone.
    # Stored times stay UTC, and the CSV downloads give UTC beside it.
    timezone: str = ""


@dataclass(frozen=True)
class Sensor:
    """How the page shows one sensor, `[sensors.<name>]` (display only: detection has its own)."""

    label: str = ""  # its name on the page ("": the name it sends)
    unit: str = ""  # e.g. "%", "°C"
    min: float | None = None  # the expected range, drawn on its charts
    max: float | None = None
    hidden: bool = False  # left out of every view (a torn name, a test sensor)
    order: int | None = None  # its place: smaller first; unordered ones after, by file order


@dataclass(frozen=True)
class Config:
    paths: Paths = field(default_factory=Paths)
    serial: Serial = field(default_factory=Serial)
    simulator: Simulator = field(default_factory=Simulator)
    transport: Transport = field(default_factory=Transport)
    store: Store = field(default_factory=Store)
    detection: Detection = field(default_factory=Detection)
    events: Events = field(default_factory=Events)
    alerts: Alerts = field(default_factory=Alerts)
    app: App = field(default_factory=App)
    # `[sensors.<name>]` tables, in the file's order; VIGIE_SENSORS (a JSON object) adds or replaces them
    sensors: Mapping[str, Sensor] = field(default_factory=dict)

    # Derived locations; everything a run writes lives under the data folder.
    @property
    def data_dir(self) -> Path:
        p = Path(self.paths.data_dir)
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def db_path(self) -> Path:
        return self.data_dir / (self.paths.database or "vigie.duckdb")

    @property
    def bus_path(self) -> Path:
        return self.data_dir / "bus.sqlite"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else PROJECT_ROOT / p


_SECTION_CLASSES = {
    "paths": Paths,
    "serial": Serial,
    "simulator": Simulator,
    "transport": Transport,
    "store": Store,
    "detection": Detection,
    "events": Events,
    "alerts": Alerts,
    "app": App,
}
_CHOICES = {
    ("transport", "kind"): ("embedded", "kafka"),
    ("store", "retention_export"): ("parquet", "csv", "none"),
    ("alerts", "min_severity"): ("info", "warning", "critical"),
    ("alerts", "quiet_min_severity"): ("info", "warning", "critical"),
}
_NON_NEGATIVE = {
    ("store", "retention_days"),
    ("store", "quiet_flush_interval"),
    ("events", "quiet_s"),
    ("events", "quiet_n"),
    ("events", "critical_score"),
    ("alerts", "group_wait_s"),
    ("alerts", "group_interval_s"),
}
# VIGIE_ variables that are not settings: the configuration file, the data folder supervisord.conf
# reads (set by workers.launch), the log level (lib.runtime). Any other VIGIE_ variable must name a
# setting: a misspelt one would otherwise be ignored and the default used without a word.
ENV_NOT_SETTINGS = ("VIGIE_CONFIG", "VIGIE_DATA_DIR", "VIGIE_LOG_LEVEL")
# The one setting that is a table of tables at the top level: VIGIE_SENSORS='{"name": {...}}'.
SENSORS_ENV = "VIGIE_SENSORS"
# Lists where one value may be written alone: `port = "/dev/ttyACM0"` as well as `port = [...]`.
_ONE_OR_MANY = {("serial", "port")}


def _coerce(where: str, default: Any, value: Any, from_env: bool, one_or_many: bool = False) -> Any:
    """Give `value` the type of `default`, or raise ConfigError naming `where`."""
    if one_or_many and isinstance(value, str) and not from_env:
        value = [value]
    if isinstance(default, bool):
        if (
            from_env
            and isinstance(value, str)
            and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        ):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        try:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int) or (from_env and str(value).strip().lstrip("-").isdigit()):
                return int(value)
        except ValueError:
            pass
    elif isinstance(default, float):
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if from_env:
                return float(value)
        except ValueError:
            pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            if one_or_many and not value:
                raise ConfigError(f"{where}: expected at least one value")
            return tuple(value)
    elif isinstance(default, Mapping):
        if from_env and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: expected a JSON object ({exc})") from None
        if isinstance(value, Mapping):
            return value
    kind = type(default).__name__ if not isinstance(default, Mapping) else "table"
    raise ConfigError(f"{where}: expected {kind}, got {value!r}")


def _check(section: str, key: str, value: Any) -> None:
    where = f"[{section}] {key}"
    if (section, key) == ("app", "timezone") and value:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{where}: unknown time zone {value!r} (an IANA name such as Europe/Paris, "
                'or "" for this machine\'s zone)'
            ) from None
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        positive = {
            ("serial", "baud"),
            ("serial", "timeout"),
            ("serial", "max_line"),
            ("serial", "new_sensor_lines"),
            ("serial", "unconfirmed_after_s"),
            ("serial", "max_sensors"),
            ("serial", "max_held_lines"),
            ("simulator", "rate"),
            ("simulator", "speed"),
            ("simulator", "unplug_s"),
            ("store", "flush_interval"),
            ("store", "max_batch"),
            ("detection", "window"),
            ("app", "refresh_s"),
            ("transport", "partitions"),
            ("app", "port"),
            ("store", "retention_check_s"),
            ("events", "min_agree"),
            ("alerts", "retry_max_s"),
            ("alerts", "give_up_s"),
            ("alerts", "timeout_s"),
        }
        if (section, key) in positive and not value > 0:
            raise ConfigError(f"{where}: must be positive, got {value!r}")
        if (section, key) in _NON_NEGATIVE and not value >= 0:
            raise ConfigError(f"{where}: must be zero or more, got {value!r}")


def _check_environment(env: Mapping[str, str]) -> None:
    """Every VIGIE_ variable names a setting (or is one of ENV_NOT_SETTINGS); else a ConfigError
    naming the nearest one.

    >>> try:
    ...     _check_environment({"VIGIE_DETECTOR_WINDOW": "30"})
    ... except ConfigError as exc:
    ...     print(exc)
    environment VIGIE_DETECTOR_WINDOW: no such setting; did you mean VIGIE_DETECTION_WINDOW? (a setting is
    VIGIE_<SECTION>_<KEY> for a [section] key of vigie.toml)
    """
    names = {
        f"VIGIE_{section.upper()}_{f.name.upper()}"
        for section, cls in _SECTION_CLASSES.items()
        for f in dataclasses.fields(cls)
    }
    names.update(ENV_NOT_SETTINGS)
    names.add(SENSORS_ENV)
    for var in sorted(env):
        if var.upper().startswith("VIGIE_") and var.upper() not in names:
            # Compared without the common prefix, which would make any two names look alike.
            near = difflib.get_close_matches(var.upper()[6:], sorted(n[6:] for n in names), n=1, cutoff=0.6)
            hint = f"; did you mean VIGIE_{near[0]}?" if near else ""
            raise ConfigError(
                f"environment {var}: no such setting{hint} (a setting is"
                f" VIGIE_<SECTION>_<KEY> for a [section] key of vigie.toml)"
            )


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the configuration: defaults, then the file, then `VIGIE_*` variables, then `overrides`.

    >>> load_config(env={}, overrides={"serial": {"baud": 115200}}).serial.baud
    115200
    """
    env = os.environ if env is None else env
    _check_environment(env)
    path = Path(path or env.get("VIGIE_CONFIG") or DEFAULT_FILE)
    raw: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    elif path != DEFAULT_FILE:
        raise ConfigError(f"configuration file {path} does not exist")

    sections: dict[str, Any] = {}
    for name, cls in _SECTION_CLASSES.items():
        defaults = cls()
        values: dict[str, Any] = {}
        file_part = raw.pop(name, {})
        if not isinstance(file_part, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(file_part) - known
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
            )
        for key, value in file_part.items():
            values[key] = _coerce(
                f"{path}: [{name}] {key}", getattr(defaults, key), value, False, (name, key) in _ONE_OR_MANY
            )
        prefix = f"VIGIE_{name.upper()}_"
        for var, value in env.items():
            if var.upper().startswith(prefix):
                key = var[len(prefix) :].lower()
                values[key] = _coerce(
                    f"environment {var}", getattr(defaults, key), value, True, (name, key) in _ONE_OR_MANY
                )
        for key, value in (overrides or {}).get(name, {}).items():
            if key not in known:
                raise ConfigError(f"override: no key {key!r} in [{name}]")
            values[key] = _coerce(
                f"override [{name}] {key}", getattr(defaults, key), value, False, (name, key) in _ONE_OR_MANY
            )
        for key, value in values.items():
            _check(name, key, value)
        sections[name] = dataclasses.replace(defaults, **values)
    sensors = _sensors(str(path), raw.pop("sensors", {}))
    if SENSORS_ENV in env:
        try:
            given = json.loads(env[SENSORS_ENV])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"environment {SENSORS_ENV}: expected a JSON object ({exc})") from None
        sensors.update(_sensors(f"environment {SENSORS_ENV}", given))
    if raw:
        raise ConfigError(
            f"{path}: unknown section(s): {', '.join(sorted(raw))} (known: {', '.join([*_SECTION_CLASSES, 'sensors'])})"
        )
    return Config(**sections, sensors=sensors)


def _sensors(origin: str, tables: Any) -> dict[str, Sensor]:
    """`[sensors.<name>]` tables (from `origin`: the file, or the environment) as Sensor
    settings, checked: unknown keys, types, min below max."""
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{origin}: [sensors]: expected a table per sensor ([sensors.<name>]), got {tables!r}")
    known = {f.name: f for f in dataclasses.fields(Sensor)}
    out = {}
    for name, table in tables.items():
        at = f"{origin}: [sensors.{name}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{at}: expected a table (label, unit, min, max, hidden, order), got {table!r}")
        unknown = set(table) - set(known)
        if unknown:
            raise ConfigError(f"{at}: unknown key(s): {', '.join(sorted(unknown))} (known: {', '.join(known)})")
        values = {}
        for key, value in table.items():
            ok = {
                "label": isinstance(value, str),
                "unit": isinstance(value, str),
                "hidden": isinstance(value, bool),
                "order": isinstance(value, int) and not isinstance(value, bool),
                "min": isinstance(value, (int, float)) and not isinstance(value, bool),
                "max": isinstance(value, (int, float)) and not isinstance(value, bool),
            }[key]
            if not ok:
                kind = {
                    "label": "text",
                    "unit": "text",
                    "hidden": "true or false",
                    "order": "a whole number",
                    "min": "a number",
                    "max": "a number",
                }[key]
                raise ConfigError(f"{at} {key}: expected {kind}, got {value!r}")
            values[key] = float(value) if key in ("min", "max") else value
        sensor = Sensor(**values)
        if sensor.min is not None and sensor.max is not None and not sensor.min < sensor.max:
            raise ConfigError(f"{at}: min ({sensor.min:g}) must be below max ({sensor.max:g})")
        out[str(name)] = sensor
    return out
