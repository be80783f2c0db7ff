"""Opening the board's port and cutting its byte stream into lines.

The port is opened with pyserial exactly as a real Arduino would be: the simulated board is a
pseudo-terminal and nothing here knows the difference.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import termios
from pathlib import Path

import serial
from serial.tools import list_ports

log = logging.getLogger(__name__)

# USB vendor ids of Arduino boards, of the USB-serial chips their clones use, and of boards that
# print to a serial port the same way. Official Arduino boards come first when choosing.
USB_VENDORS = {
    0x2341: "Arduino",
    0x2A03: "Arduino (arduino.org)",
    0x1A86: "CH340/CH341 USB-serial (clone boards)",
    0x0403: "FTDI USB-serial",
    0x10C4: "CP210x USB-serial (Silicon Labs)",
    0x067B: "PL2303 USB-serial (Prolific)",
    0x239A: "Adafruit",
    0x1B4F: "SparkFun",
    0x2E8A: "Raspberry Pi Pico",
    0x303A: "Espressif (ESP32)",
    0x16C0: "Teensy (PJRC)",
}
OFFICIAL_VIDS = {0x2341, 0x2A03}
BY_ID = Path("/dev/serial/by-id")


class PortError(RuntimeError):
    """A port that cannot be used, with a message for the operator (never a traceback).
    `lasting` errors (permission denied, bad settings) do not go away by waiting for the board;
    `busy`: another program holds the port (the message names it)."""

    def __init__(self, message: str, lasting: bool = False, busy: bool = False):
        super().__init__(message)
        self.lasting = lasting
        self.busy = busy


def arduino_like(port) -> bool:
    """A `list_ports` entry that looks like an Arduino or one of its clones' USB-serial chips."""
    return (
        port.vid in USB_VENDORS
        or "arduino" in f"{port.description} {port.manufacturer}".lower()
        or port.device.startswith(("/dev/ttyACM", "/dev/ttyUSB"))
    )


def describe(port) -> str:
    """How the operator recognises a board: its description and USB ids with the vendor's name,
    e.g. `Arduino Uno, USB 2341:0043 Arduino`."""
    if port.vid is None:
        return port.description
    ids = f"USB {port.vid:04x}:{port.pid or 0:04x}"
    return f"{port.description}, {ids} {USB_VENDORS.get(port.vid, 'unknown vendor')}"


def find_boards(ports=None) -> list:
    """Every Arduino-like port (`list_ports` entries), official Arduino boards first, then known
    USB-serial chips, then by name; each group by device path."""
    ports = list(list_ports.comports() if ports is None else ports)
    return sorted(
        (p for p in ports if arduino_like(p)),
        key=lambda p: (p.vid not in OFFICIAL_VIDS, p.vid not in USB_VENDORS, p.device),
    )


def find_arduino(ports=None) -> str:
    """The device of the first Arduino-like port (see `find_boards`), saying which it chose; a
    PortError naming every port seen when none fits."""
    ports = list(list_ports.comports() if ports is None else ports)
    fits = find_boards(ports)
    if not fits:
        seen = ", ".join(f"{p.device} ({p.description})" for p in ports) or "none"
        raise PortError(f"--port auto: no Arduino-like serial device found; ports seen: {seen}")
    chosen = fits[0]
    others = f" (also fitting: {', '.join(p.device for p in fits[1:])})" if len(fits) > 1 else ""
    log.info("--port auto chose %s (%s)%s", chosen.device, describe(chosen), others)
    return chosen.device


def stable_path(device: str, by_id: Path = BY_ID) -> str:
    """The board's /dev/serial/by-id/ link when udev made one (it names the board and survives a
    replug that gives the board another ttyACM number), else the device itself."""
    try:
        links = sorted(by_id.iterdir())
    except OSError:
        return device
    real = os.path.realpath(device)
    return next((str(link) for link in links if os.path.realpath(link) == real), device)


def port_holders(path: str) -> list[tuple[int, str]]:
    """(pid, command) of the other processes that have `path` open, from /proc/*/fd (those of
    other users are not visible unless we are root)."""
    try:
        target = os.path.realpath(path)
    except OSError:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(proc.name), cmd[:120] or proc.name))
        except OSError:
            continue  # gone, or not ours to look at
    return found


def describe_holders(holders: list[tuple[int, str]]) -> str:
    return ", ".join(f"pid {pid} ({cmd})" for pid, cmd in holders)


def open_port(path: str, baud: int, timeout: float) -> serial.Serial:
    """Open `path` for Vigie alone, turning pyserial's errors into one clear `PortError`.

    A second program reading the same port (an IDE's serial monitor, another Vigie) takes bytes
    from the stream: lines go missing, and torn ones parse as sensors that do not exist. So a port
    another process has open is refused as busy, naming it; the open takes pyserial's exclusive
    lock (flock) and sets TIOCEXCL, so that later opens by others fail (root is not stopped by
    TIOCEXCL: `SerialProducer` also looks for newcomers while it reads)."""
    if baud not in serial.Serial.BAUDRATES and not (50 <= baud <= 4_000_000):
        raise PortError(f"baud rate {baud} is not a rate a serial port accepts", lasting=True)
    try:
        port = serial.Serial(port=path, baudrate=baud, timeout=timeout, exclusive=True)
    except serial.SerialException as exc:
        if "exclusively lock" in str(exc):
            raise PortError(
                f"{path} is locked by another program ({describe_holders(port_holders(path)) or 'unknown'})"
                "; Vigie opens the port once it is free",
                busy=True,
            ) from None
        err = exc.errno if isinstance(exc.errno, int) else getattr(exc.__cause__, "errno", None)
        if err == errno.ENOENT or (not os.path.exists(path) and err is None):
            raise PortError(f"no such port: {path}") from None
        if err == errno.EACCES:
            raise PortError(
                f"permission denied on {path} (is the user in the 'dialout' group?)", lasting=True
            ) from None
        if err == errno.ENOTTY or isinstance(exc.__context__, Exception) and "Inappropriate ioctl" in str(exc):
            raise PortError(f"{path} is not a serial device", lasting=True) from None
        raise PortError(f"cannot open {path} at {baud} baud: {exc}") from None
    except ValueError as exc:
        raise PortError(f"bad serial settings for {path}: {exc}", lasting=True) from None
    holders = port_holders(path)
    if holders:
        port.close()
        raise PortError(
            f"{path} is in use by {describe_holders(holders)}: a second reader takes lines from "
            "Vigie. Close it (an IDE's serial monitor?); Vigie opens the port once it is free.",
            busy=True,
        )
    try:
        fcntl.ioctl(port.fileno(), termios.TIOCEXCL)
    except OSError as exc:  # not a terminal device after all: the flock above still holds
        log.debug("TIOCEXCL on %s: %s", path, exc)
    return port


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
                    del self._buf[self.max_line :]
                return out
            line = bytes(self._buf[:i])
            del self._buf[: i + 1]
            if self._overflow or len(line) > self.max_line:
                out.append((line, True))
                self._overflow = 0
            else:
                out.append((line, False))

    def pending(self) -> int:
        """Bytes fed that are not yet part of a complete line."""
        return len(self._buf) + self._overflow

    def take_partial(self) -> bytes:
        """The incomplete line left when the port went away (empty if none)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._overflow = 0
        return rest
