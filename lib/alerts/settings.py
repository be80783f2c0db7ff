"""`[alerts]` read into channels and routes, with secrets from the environment or a private file.

A channel is `[alerts.channels.<name>]` with `kind = "webhook"` or `"email"`; a route is
`[alerts.routes.<name>]` with `channels`, and optionally `sensors` (names, "*" for all) and
`min_severity`. With no route, every channel hears about every sensor.

Secrets (a webhook's token or secret URL, an SMTP login) never sit in vigie.toml or on the page:
`token_env = "NAME"` reads the environment variable NAME, `token_file = "/path"` reads a file
that only its owner may read (mode 0600 or 0400); the same for `url` and `password`. A plain
`token` or `password` in the file stops start-up with a message saying where to put it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any, Mapping

from lib.detect.events import SEVERITIES, SEVERITY_RANK

WEBHOOK_FORMATS = ("json", "slack", "ntfy")
EMAIL_SECURITY = ("none", "starttls", "ssl")
SECRET_KEYS = ("token", "password")  # never given in the file itself
FROM_ENV_OR_FILE = ("url", "token", "password", "username")
_KNOWN = {
    "webhook": {"kind", "url", "format", "topic", "token"},
    "email": {"kind", "host", "port", "security", "username", "password", "from", "to", "ca_file"},
}


class AlertsConfigError(ValueError):
    """A bad `[alerts]` key, value or secret; the message names it (never the secret)."""


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str
    url: str = ""
    format: str = "json"
    topic: str = ""
    host: str = ""
    port: int = 0
    security: str = "none"
    sender: str = ""
    to: tuple[str, ...] = ()
    ca_file: str = ""
    # Secrets: resolved at start-up, kept out of repr so that no log line can print them.
    token: str = field(default="", repr=False)
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)  # every secret value, to scrub from errors


@dataclass(frozen=True)
class Route:
    name: str
    channels: tuple[str, ...]
    sensors: tuple[str, ...] = ("*",)
    min_severity: str = "warning"

    def matches(self, sensor: str, severity: str) -> bool:
        return ("*" in self.sensors or sensor in self.sensors) and SEVERITY_RANK[severity] >= SEVERITY_RANK[
            self.min_severity
        ]


@dataclass(frozen=True)
class QuietHours:
    """A daily span of local time ("22:00-07:00" crosses midnight) when only events of at least
    `min_severity` are sent; the others are recorded as held back."""

    start: time
    end: time
    min_severity: str = "critical"

    def holds_back(self, severity: str, now: datetime) -> bool:
        t = now.time()
        inside = (self.start <= t < self.end) if self.start <= self.end else (t >= self.start or t < self.end)
        return inside and SEVERITY_RANK[severity] < SEVERITY_RANK[self.min_severity]


@dataclass(frozen=True)
class AlertSettings:
    channels: Mapping[str, Channel]
    routes: tuple[Route, ...]
    page_url: str
    quiet: QuietHours | None = None
    group_wait_s: float = 0.2
    group_interval_s: float = 60.0
    retry_max_s: float = 60.0
    give_up_s: float = 86400.0
    timeout_s: float = 10.0
    timezone: str = ""  # [app] timezone: quiet hours are the operator's hours ("": this machine's)

    def channels_for(self, sensor: str, severity: str) -> list[str]:
        """The channels that hear about an event on `sensor` at `severity`, each once."""
        out: dict[str, None] = {}
        for r in self.routes:
            if r.matches(sensor, severity):
                out.update(dict.fromkeys(r.channels))
        return list(out)


def _secret_from(where: str, key: str, table: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    if f"{key}_env" in table:
        var = table[f"{key}_env"]
        if not isinstance(var, str) or not var:
            raise AlertsConfigError(f"{where} {key}_env: expected an environment variable's name")
        if var not in env:
            raise AlertsConfigError(f"{where} {key}_env: the environment has no {var}")
        return env[var]
    if f"{key}_file" in table:
        path = Path(str(table[f"{key}_file"]))
        try:
            st = path.stat()
        except OSError as exc:
            raise AlertsConfigError(f"{where} {key}_file: cannot read {path} ({exc.strerror})") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AlertsConfigError(
                f"{where} {key}_file: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
            )
        if st.st_uid != os.getuid():
            raise AlertsConfigError(f"{where} {key}_file: {path} belongs to another user")
        return path.read_text(encoding="utf-8").strip()
    return None


def _channel(name: str, table: Any, env: Mapping[str, str]) -> Channel:
    where = f"[alerts.channels.{name}]"
    if not isinstance(table, Mapping):
        raise AlertsConfigError(f"{where}: expected a table, got {table!r}")
    kind = table.get("kind")
    if kind not in _KNOWN:
        raise AlertsConfigError(f"{where} kind: must be one of {', '.join(_KNOWN)}, got {kind!r}")
    known = _KNOWN[kind] | {f"{k}_{s}" for k in FROM_ENV_OR_FILE if k in _KNOWN[kind] for s in ("env", "file")}
    for key in SECRET_KEYS:
        if key in table:
            raise AlertsConfigError(
                f"{where} {key}: a secret does not belong in the configuration file; "
                f"use {key}_env (an environment variable) or {key}_file (a file only you can read)"
            )
    bad = set(table) - known
    if bad:
        allowed = ", ".join(sorted(known - set(SECRET_KEYS)))
        raise AlertsConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))} (known: {allowed})")
    values: dict[str, Any] = {}
    secrets = []
    for key in FROM_ENV_OR_FILE:
        found = _secret_from(where, key, table, env)
        if found is not None:
            values[key] = found
            secrets.append(found)
        elif key in table:
            values[key] = table[key]
    for key, value in table.items():
        if key in ("kind", "format", "topic", "host", "security", "from", "ca_file") and not isinstance(value, str):
            raise AlertsConfigError(f"{where} {key}: expected a string, got {value!r}")
    if kind == "webhook":
        url, fmt = values.get("url", ""), table.get("format", "json")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise AlertsConfigError(f"{where} url: expected an http:// or https:// address")
        if fmt not in WEBHOOK_FORMATS:
            raise AlertsConfigError(f"{where} format: must be one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}")
        if fmt == "ntfy" and not table.get("topic"):
            raise AlertsConfigError(f"{where} topic: the ntfy format needs a topic")
        return Channel(
            name,
            kind,
            url=url,
            format=fmt,
            topic=table.get("topic", ""),
            token=values.get("token", ""),
            secrets=tuple(s for s in secrets if s),
        )
    host, port, security = table.get("host", ""), table.get("port", 25), table.get("security", "none")
    to = table.get("to", [])
    if not host:
        raise AlertsConfigError(f"{where} host: the SMTP server's name is needed")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise AlertsConfigError(f"{where} port: expected a port number, got {port!r}")
    if security not in EMAIL_SECURITY:
        raise AlertsConfigError(f"{where} security: must be one of {', '.join(EMAIL_SECURITY)}, got {security!r}")
    if isinstance(to, str):
        to = [to]
    if not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise AlertsConfigError(f"{where} to: expected a list of e-mail addresses, got {to!r}")
    sender = table.get("from", "")
    if "@" not in sender:
        raise AlertsConfigError(f"{where} from: expected the sender's e-mail address, got {sender!r}")
    if values.get("password") and not values.get("username"):
        raise AlertsConfigError(f"{where}: a password without a username")
    return Channel(
        name,
        kind,
        host=host,
        port=port,
        security=security,
        sender=sender,
        to=tuple(to),
        ca_file=table.get("ca_file", ""),
        username=values.get("username", ""),
        password=values.get("password", ""),
        secrets=tuple(s for s in secrets if s),
    )


def _severity(where: str, value: Any) -> str:
    if value not in SEVERITIES:
        raise AlertsConfigError(f"{where}: must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return value


def _clock(where: str, text: str) -> time:
    try:
        h, m = text.strip().split(":")
        return time(int(h), int(m))
    except ValueError:
        raise AlertsConfigError(f"{where}: expected HH:MM-HH:MM, got {text!r}") from None


def load_alerts(config, env: Mapping[str, str] | None = None) -> AlertSettings:
    """The notifier's settings from `config.alerts`; AlertsConfigError names what is wrong."""
    env = os.environ if env is None else env
    a = config.alerts
    channels = {name: _channel(name, table, env) for name, table in a.channels.items()}
    routes = []
    for name, table in a.routes.items():
        where = f"[alerts.routes.{name}]"
        if not isinstance(table, Mapping):
            raise AlertsConfigError(f"{where}: expected a table, got {table!r}")
        bad = set(table) - {"channels", "sensors", "min_severity"}
        if bad:
            raise AlertsConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(bad))} (known: channels, min_severity, sensors)"
            )
        chans, sensors = table.get("channels", []), table.get("sensors", ["*"])
        for key, value in (("channels", chans), ("sensors", sensors)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise AlertsConfigError(f"{where} {key}: expected a list of names, got {value!r}")
        missing = [c for c in chans if c not in channels]
        if missing or not chans:
            raise AlertsConfigError(
                f"{where} channels: no channel named {', '.join(missing)}"
                if missing
                else f"{where} channels: name at least one channel"
            )
        routes.append(
            Route(
                name,
                tuple(chans),
                tuple(sensors),
                _severity(f"{where} min_severity", table.get("min_severity", a.min_severity)),
            )
        )
    if not routes and channels:
        routes.append(Route("default", tuple(channels), ("*",), a.min_severity))
    quiet = None
    if a.quiet_hours:
        if "-" not in a.quiet_hours:
            raise AlertsConfigError(f"[alerts] quiet_hours: expected HH:MM-HH:MM, got {a.quiet_hours!r}")
        lo, hi = a.quiet_hours.split("-", 1)
        quiet = QuietHours(_clock("[alerts] quiet_hours", lo), _clock("[alerts] quiet_hours", hi), a.quiet_min_severity)
    page_url = (a.page_url or f"http://{config.app.address}:{config.app.port}").rstrip("/")
    return AlertSettings(
        channels,
        tuple(routes),
        page_url,
        quiet,
        a.group_wait_s,
        a.group_interval_s,
        a.retry_max_s,
        a.give_up_s,
        a.timeout_s,
        config.app.timezone,
    )
