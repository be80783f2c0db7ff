"""Opening the board's port and cutting its byte stream into lines.

The port is opened with pyserial exactly as a real Arduino would be: the simulated board is a
pseudo-terminal and nothing here knows the difference.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import serial
from serial.tools import list_ports

# USB vendor ids of Arduino boards and of the USB-serial chips their clones use.
ARDUINO_VIDS = {0x2341, 0x2A03, 0x1A86, 0x0403, 0x10C4, 0x239A}


class PortError(RuntimeError):
    """A port that cannot be used, with a message for the operator (never a traceback)."""


def resolve_port(setting: str, sim_link: Path) -> str:
    """The device path for a `[serial] port` setting: "sim", "auto" or a path."""
    if setting == "sim":
        return str(sim_link)
    if setting == "auto":
        return find_arduino()
    return setting


def find_arduino() -> str:
    ports = list(list_ports.comports())
    fits = [p for p in ports if p.vid in ARDUINO_VIDS or "arduino" in f"{p.description} {p.manufacturer}".lower()
            or p.device.startswith(("/dev/ttyACM", "/dev/ttyUSB"))]
    if not fits:
        seen = ", ".join(f"{p.device} ({p.description})" for p in ports) or "none"
        raise PortError(f"--port auto: no Arduino-like serial device found; ports seen: {seen}")
    return fits[0].device


def open_port(path: str, baud: int, timeout: float) -> serial.Serial:
    """Open `path`, turning pyserial's errors into one clear `PortError`."""
    if baud not in serial.Serial.BAUDRATES and not (50 <= baud <= 4_000_000):
        raise PortError(f"baud rate {baud} is not a rate a serial port accepts")
    try:
        return serial.Serial(port=path, baudrate=baud, timeout=timeout)
    except serial.SerialException as exc:
        err = exc.errno if isinstance(exc.errno, int) else getattr(exc.__cause__, "errno", None)
        if err == errno.ENOENT or (not os.path.exists(path) and err is None):
            raise PortError(f"no such port: {path}") from None
        if err == errno.EACCES:
            raise PortError(f"permission denied on {path} (is the user in the 'dialout' group?)") from None
        raise PortError(f"cannot open {path} at {baud} baud: {exc}") from None
    except ValueError as exc:
        raise PortError(f"bad serial settings for {path}: {exc}") from None


class LineSplitter:
    """Bytes in, complete lines out. A line longer than `max_line` is cut off and reported once as
    too long instead of being buffered for ever (a board printing without newlines)."""

    def __init__(self, max_line: int):
        self.max_line = max_line
        self._buf = bytearray()
        self._overflow = 0  # bytes discarded from the current too-long line

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """[(line, too_long)] for each line completed by `data` (line without its `\\n`)."""
        out = []
        self._buf += data
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self.max_line:
                    self._overflow += len(self._buf) - self.max_line
                    del self._buf[self.max_line:]
                return out
            line = bytes(self._buf[:i])
            del self._buf[: i + 1]
            if self._overflow or len(line) > self.max_line:
                out.append((line, True))
                self._overflow = 0
            else:
                out.append((line, False))

    def take_partial(self) -> bytes:
        """The incomplete line left when the port went away (empty if none)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._overflow = 0
        return rest
