"""The board's line protocol: `topic!value`, split at the last `!` (as the original program's
`separateur_serial` does: docs/origins.md).

`parse_line` never raises: any bytes give either a `Parsed` (sensor, value) or a `Rejected` with a
reason code, so that the producer can store bad lines instead of crashing on them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# A sensor name becomes a Kafka topic name, so it follows Kafka's rules (legal characters, at most
# 249 of them). Names starting with "_vigie" or "__" are kept for internal topics.
TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
RESERVED_PREFIXES = ("_vigie", "__")
MAX_LINE = 512

# Reason codes, stored with each rejected line.
NO_SEPARATOR = "no_separator"
EMPTY_TOPIC = "empty_topic"
BAD_TOPIC = "bad_topic"
RESERVED_TOPIC = "reserved_topic"
EMPTY_VALUE = "empty_value"
NOT_A_NUMBER = "not_a_number"
NOT_FINITE = "not_finite"
BAD_UTF8 = "bad_utf8"
TOO_LONG = "too_long"
PARTIAL_LINE = "partial_line"
# Given by the producer, not by the line alone (see lib.ingest.producer.SensorGate):
UNKNOWN_SENSOR = "unknown_sensor"  # not in [serial] sensors
UNCONFIRMED_SENSOR = "unconfirmed_sensor"  # a new name that never sent [serial] new_sensor_lines lines
TOO_MANY_SENSORS = "too_many_sensors"  # past [serial] max_sensors distinct names
REASONS = (
    NO_SEPARATOR,
    EMPTY_TOPIC,
    BAD_TOPIC,
    RESERVED_TOPIC,
    EMPTY_VALUE,
    NOT_A_NUMBER,
    NOT_FINITE,
    BAD_UTF8,
    TOO_LONG,
    PARTIAL_LINE,
    UNKNOWN_SENSOR,
    UNCONFIRMED_SENSOR,
    TOO_MANY_SENSORS,
)

_NUMBER_RE = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Parsed:
    sensor: str
    value: float


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    raw: str  # the line, escaped so that it is safe to store and show

    def __str__(self) -> str:
        return f"{self.reason}: {self.raw}"


def escape_raw(data: bytes) -> str:
    """Printable ASCII stays as is; every other byte (and the backslash) becomes `\\xNN`. Never raises."""
    text = data.decode("latin-1")
    if text.isprintable() and text.isascii() and "\\" not in text:
        return text
    return "".join(c if " " <= c <= "~" and c != "\\" else f"\\x{ord(c):02x}" for c in text)


def valid_topic(name: str) -> str | None:
    """None when `name` may be a sensor topic, else the reason code."""
    if not name:
        return EMPTY_TOPIC
    if not TOPIC_RE.fullmatch(name) or name in (".", ".."):
        return BAD_TOPIC
    if name.startswith(RESERVED_PREFIXES):
        return RESERVED_TOPIC
    return None


def parse_value(text: str) -> float | str:
    """The value as a float, or a reason code. Accepts a decimal comma (`42,7`)."""
    if not text:
        return EMPTY_VALUE
    if not _NUMBER_RE.fullmatch(text):
        low = text.lower().lstrip("+-")
        return NOT_FINITE if low in ("nan", "inf", "infinity") else NOT_A_NUMBER
    value = float(text.replace(",", "."))
    if not math.isfinite(value):
        return NOT_FINITE
    return value


def parse_line(line: bytes, max_line: int = MAX_LINE) -> Parsed | Rejected:
    """Parse one line from the board (with or without its `\\r\\n`).

    >>> parse_line(b"humidite!42.7\\r\\n")
    Parsed(sensor='humidite', value=42.7)
    >>> parse_line(b"temp!erature!21,5")  # split at the last "!"
    Rejected(reason='bad_topic', raw='temp!erature!21,5')
    """
    if len(line) > max_line:
        return Rejected(TOO_LONG, escape_raw(line[:max_line]) + f"...(+{len(line) - max_line} bytes)")
    raw = escape_raw(line.rstrip(b"\r\n"))
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(BAD_UTF8, raw)
    text = text.strip()
    idx = text.rfind("!")
    if idx < 0:
        return Rejected(NO_SEPARATOR, raw)
    topic, value_text = text[:idx].strip(), text[idx + 1 :].strip()
    reason = valid_topic(topic)
    if reason:
        return Rejected(reason, raw)
    value = parse_value(value_text)
    if isinstance(value, str):
        return Rejected(value, raw)
    return Parsed(topic, value)


def format_line(sensor: str, value: float, decimals: int = 2) -> bytes:
    """What a board prints: `sensor!value\\r\\n`."""
    return f"{sensor}!{value:.{decimals}f}\r\n".encode("ascii")
