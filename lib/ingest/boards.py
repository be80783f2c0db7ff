"""Which boards to read: `[serial] port` as a list of boards, one producer program each.

An entry of `[serial] port` is:

- `"sim"`: the simulated Arduino playing `[simulator] scenario`, on a pseudo-terminal published at
  `<data>/run/arduino`;
- `"sim:NAME"`: another simulated board playing `data/scenarios/NAME.toml` (or the file NAME), at
  `<data>/run/NAME` (sensor names must differ between boards: a sensor is one series);
- `"auto"`: every Arduino-like board plugged in at start-up (`serial_port.find_boards`), each under
  its /dev/serial/by-id/ name when udev made one; with no board yet, or only one, a single producer
  that finds the board itself (again after a replug);
- anything else: a device path (`/dev/ttyACM0`, `/dev/serial/by-id/...`).

`workers.launch` turns the boards into supervisord programs (`program_sections`): one board keeps
the plain names `producer` and `simulator`, several get `producer-<name>` and `simulator-<name>`.
Each producer reports its state in `<data>/run/producer-<name>.json` (lib.ingest.status).
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from lib.config import PROJECT_ROOT, Config, ConfigError
from lib.ingest.serial_port import describe, find_boards, stable_path
from lib.ingest.status import safe_name

log = logging.getLogger(__name__)

SIM, AUTO = "sim", "auto"
SIM_LINK_NAME = "arduino"  # the plain "sim" board's link in the run folder
SCENARIOS = PROJECT_ROOT / "data" / "scenarios"


@dataclass(frozen=True)
class Board:
    entry: str  # the `[serial] port` entry, given to the producer as --port
    name: str  # unique and file-safe: status file, program names, a simulated board's link

    @property
    def simulated(self) -> bool:
        return self.entry == SIM or self.entry.startswith(SIM + ":")

    def device(self, config: Config) -> str:
        """The path the producer opens ("auto" is resolved by the producer itself)."""
        return str(config.run_dir / self.name) if self.simulated else self.entry

    def scenario(self, config: Config) -> Path | None:
        """A simulated board's scenario file; None for the plain "sim" board ([simulator] scenario)."""
        if not self.entry.startswith(SIM + ":"):
            return None
        spec = self.entry[len(SIM) + 1 :]
        if "/" in spec or spec.endswith(".toml"):
            return config.resolve(spec)
        return SCENARIOS / f"{spec}.toml"


def board_for(entry: str) -> Board:
    """The board of one port entry, without looking for devices ("auto" stays one board)."""
    if entry == SIM:
        return Board(entry, SIM_LINK_NAME)
    if entry.startswith(SIM + ":"):
        spec = entry[len(SIM) + 1 :]
        if not spec:
            raise ConfigError(f"[serial] port: {entry!r} names no scenario (sim:NAME)")
        return Board(entry, safe_name(Path(spec).stem))
    return Board(entry, safe_name(Path(entry).name))


def boards(config: Config, find=find_boards) -> list[Board]:
    """Every board to read, "auto" expanded to the boards plugged in now (`find` lists them)."""
    entries = config.serial.port
    out = [board_for(e) for e in entries if e != AUTO]
    if AUTO in entries:
        taken = {os.path.realpath(b.entry) for b in out if not b.simulated}
        found = [p for p in find() if os.path.realpath(p.device) not in taken]
        for p in found:
            log.info("--port auto found %s (%s)", p.device, describe(p))
        if not found:
            log.info(
                "--port auto: no %sboard plugged in%s",
                "other " if out else "",
                "" if out else " yet; the producer waits for one",
            )
        if not out and len(found) <= 1:
            # One board or none yet: the producer looks for it itself, so it also finds a board
            # plugged in later or replugged under another name.
            out.append(board_for(AUTO))
        else:
            out += [Board(stable_path(p.device), safe_name(Path(p.device).name)) for p in found]
    names = [b.name for b in out]
    for name in names:
        if names.count(name) > 1:
            dup = [b.entry for b in out if b.name == name]
            raise ConfigError(
                f"[serial] port: {' and '.join(dup)} would both be called {name!r}"
                f" (status file, program name): give one another name or path"
            )
    return out


def _quote(arg: str) -> str:
    # supervisord expands %(...)s in values: a literal % is written %%.
    return shlex.quote(arg).replace("%", "%%")


PROGRAM = """\
[program:{program}]
command={command}
directory={root}
priority={priority}
{options}stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
"""

PRODUCER_OPTIONS = """\
autorestart=true
startsecs=1
stopwaitsecs=15
; The producer's process group: a stop reaches anything it started.
stopasgroup=true
killasgroup=true
"""

# A simulator that exits 0 (it was stopped) stays stopped. It stops before the producer (a higher priority stops
# first): lines the board sent are then all read before the
# producer stops, at the cost of a short "board gone" gap closing each session.
SIMULATOR_OPTIONS = """\
autorestart=unexpected
exitcodes=0
startsecs=0
stopwaitsecs=10
stopasgroup=true
killasgroup=true
"""


def program_sections(board_list: list[Board], python: str) -> str:
    """supervisord `[program:...]` sections for the boards' producers and simulators."""
    several = len(board_list) > 1
    parts = ["; Written by workers.launch from [serial] port at each start: edit vigie.toml, not this.\n"]

    def section(program: str, priority: int, options: str, module: str, args: list[str]) -> str:
        command = " ".join(_quote(a) for a in [python, "-m", module, *args])
        return PROGRAM.format(program=program, root=PROJECT_ROOT, priority=priority, options=options, command=command)

    for b in board_list:
        suffix = f"-{b.name}" if several else ""
        args = ["--port", b.entry, "--name", b.name]
        parts.append(section(f"producer{suffix}", 30, PRODUCER_OPTIONS, "workers.producer", args))
        if b.simulated:
            parts.append(section(f"simulator{suffix}", 40, SIMULATOR_OPTIONS, "workers.simulator", ["--port", b.entry]))
    return "\n".join(parts)
