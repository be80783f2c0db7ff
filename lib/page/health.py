"""What is wrong with the system, not with the data: the page's health panel.

Four sources, each read without the database (a stuck store must not hide its own trouble):

- supervisord, over its control socket (lib.supervision.rpc): each program's state (running,
  starting, restarting after an exit, FATAL when it gave up, stopped);
- the producers' status files (lib.ingest.status): each board connected or not, on which port,
  the port held by another program, lines held in memory on a full disk;
- the transport: what each consumer group has yet to take (`Transport.backlog`: messages on the
  embedded log, records on Kafka);
- the store's status file (lib.store.status): when its last write committed.

`check` gathers them; `problems` turns them into sentences for the operator, worst first. Times
are Unix seconds from this machine's clock, compared with `now` from the same clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lib.ingest import status as producer_status
from lib.ingest.status import ProducerStatus, read_statuses

# supervisord's state names, as an operator reads them
PROGRAM_WORDS = {
    "RUNNING": "running",
    "STARTING": "starting",
    "BACKOFF": "restarting (it exited; retrying)",
    "STOPPING": "stopping",
    "STOPPED": "stopped",
    "EXITED": "exited",
    "FATAL": "FATAL: supervisord gave up starting it",
    "UNKNOWN": "unknown",
}
#: a consumer group this many messages behind is worth a line (one second at 20,000 readings/s)
BACKLOG_WARN = 20_000
#: the store has not written for this long while a board sent lines
STORE_QUIET_S = 10.0


@dataclass(frozen=True)
class Program:
    name: str
    state: str  # supervisord's statename
    description: str  # supervisord's: "pid 12, uptime 0:01:02", the spawn error, ...
    exit_status: int = 0
    expected_exit: bool = True  # an EXITED program whose exit code supervisord was told to expect


@dataclass(frozen=True)
class SystemHealth:
    now: float
    programs: list[Program] | None  # None: supervisord not reachable (see supervisor_error)
    supervisor_error: str | None
    boards: list[ProducerStatus]
    backlog: dict[str, int] | None  # None: the transport cannot tell
    backlog_error: str | None
    store_last_write: float | None  # None: no write recorded yet
    problems: list[str] = field(default_factory=list)
    backlog_unit: str = "messages"  # what the backlog counts (`Transport.backlog_unit`)


def program_states(data_dir) -> list[Program]:
    """Every supervisord program's state (raises OSError when supervisord does not answer)."""
    import xmlrpc.client

    from lib.supervision import rpc

    try:
        infos = rpc(data_dir).supervisor.getAllProcessInfo()
    except xmlrpc.client.Error as exc:
        raise OSError(str(exc)) from exc
    out = []
    for info in infos:
        name = info["name"] if info.get("group") in (None, info["name"]) else f"{info['group']}:{info['name']}"
        description = info.get("description", "")
        if info["statename"] in ("STOPPED", "EXITED"):
            # supervisord's own text is a 12-hour clock time in its zone: say how long instead
            description = f"for {_ago(info['now'] - info['stop'])}" if info.get("start") else "not started"
        out.append(
            Program(
                name=name,
                state=info["statename"],
                description=description,
                exit_status=int(info.get("exitstatus", 0) or 0),
                expected_exit=info["statename"] != "EXITED" or int(info.get("exitstatus", 0) or 0) == 0,
            )
        )
    return sorted(out, key=lambda p: p.name)


def check(config, now: float | None = None, transport=None) -> SystemHealth:
    """Read every source once (each failure is reported, not raised)."""
    from lib.store.status import read_store_status
    from lib.transport import transport_class

    now = time.time() if now is None else now
    try:
        programs, supervisor_error = program_states(config.data_dir), None
    except OSError as exc:
        programs, supervisor_error = None, str(exc) or type(exc).__name__
    boards = read_statuses(config.run_dir)
    backlog, backlog_error = None, None
    try:
        if transport is None and config.transport.kind == "embedded" and not config.bus_path.exists():
            backlog = {}  # no transport log yet: nothing waits (and the page creates no file)
        elif transport is None:
            from lib.transport import open_transport

            transport = open_transport(config)
            try:
                backlog = transport.backlog()
            finally:
                transport.close()
        else:
            backlog = transport.backlog()
    except Exception as exc:  # a broker away, a locked log: the health panel says so and goes on
        backlog_error = f"{type(exc).__name__}: {exc}"
    store = read_store_status(config.run_dir)
    health = SystemHealth(
        now=now,
        programs=programs,
        supervisor_error=supervisor_error,
        boards=boards,
        backlog=backlog,
        backlog_error=backlog_error,
        store_last_write=store.get("last_write_at") if store else None,
        backlog_unit=(transport or transport_class(config.transport.kind)).backlog_unit,
    )
    return SystemHealth(**{**health.__dict__, "problems": problems(health)})


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def board_problem(s: ProducerStatus, now: float) -> str | None:
    """What is wrong with one board's producer, or None."""
    where = f"board **{s.name}**" + (f" ({s.port})" if s.port and s.port != s.name else "")
    detail = f": {s.detail}" if s.detail else ""
    if not s.alive and s.state != producer_status.STOPPED:
        return f"{where}: its producer is not running (last said: {s.state}{detail})"
    if s.state == producer_status.CONNECTED:
        return None
    since = f" for {_ago(now - s.since)}" if s.since else ""
    if s.state == producer_status.PORT_BUSY:
        return f"{where}: the port is held by another program{since}{detail}"
    if s.state == producer_status.WAITING:
        return f"{where}: no board connected{since}{detail}"
    if s.state == producer_status.BUFFERING:
        return f"{where}: the disk is full; {s.buffered_lines:,} lines held in memory{since}{detail}"
    return f"{where}: {s.state}{since}{detail}"


def problems(h: SystemHealth) -> list[str]:
    """Sentences for the operator, worst first: programs down, boards, the store, the backlog."""
    out = []
    if h.programs is not None:
        for p in h.programs:
            if p.state in ("FATAL", "BACKOFF", "STOPPED", "UNKNOWN") or not p.expected_exit:
                what = PROGRAM_WORDS.get(p.state, p.state)
                if p.state == "EXITED":
                    what = f"exited with code {p.exit_status}"
                out.append(f"program **{p.name}** is {what}" + (f" ({p.description})" if p.description else ""))
    for s in h.boards:
        found = board_problem(s, h.now)
        if found:
            out.append(found)
    last_line = max((s.last_line_at or 0.0 for s in h.boards if s.alive), default=0.0)
    if last_line and (h.store_last_write is None or last_line - h.store_last_write > STORE_QUIET_S):
        quiet = (
            "has not written yet"
            if h.store_last_write is None
            else f"has not written for {_ago(h.now - h.store_last_write)}"
        )
        out.append(f"the **store** {quiet} while boards send lines (disk full, or the store stopped?)")
    for group, waiting in sorted((h.backlog or {}).items()):
        if waiting >= BACKLOG_WARN:
            out.append(f"**{group}** is {waiting:,} {h.backlog_unit} behind on the transport")
    return out


def with_ages(sensors, now):
    """The per-sensor health table (`queries.health`: sensor, last_ts, per_s) with `age_s` taken
    at `now` (naive UTC, the moment it is shown): never negative. A last reading stamped after
    `now` (a producer on a machine whose clock runs ahead) has age 0 and its lead in `ahead_s`."""
    delta = (now - sensors["last_ts"]).dt.total_seconds()
    return sensors.assign(age_s=delta.clip(lower=0.0), ahead_s=(-delta).clip(lower=0.0))


def stale(sensors):
    """Sensors silent for 10 s, or for 5 of their usual intervals if they are slow ones."""
    limit = (5.0 / sensors["per_s"].where(sensors["per_s"] > 0)).fillna(10.0).clip(lower=10.0)
    return sensors["age_s"] > limit
