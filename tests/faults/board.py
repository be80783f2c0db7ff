"""A board the test drives itself: a pseudo-terminal published at a path, that can be unplugged
(the device disappears) and plugged back, and told to write good lines or garbage."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import struct
import termios
import time
import tty
from pathlib import Path


class DrivenBoard:
    def __init__(self, link: Path):
        self.link = Path(link)
        self.master = self.slave = None
        self.ledger: list[bytes] = []  # every good line written, in order

    def plug(self) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave, termios.TCSANOW)
        # Packet mode: the reader's input flush on open (pyserial does one) is how we know it is there.
        fcntl.ioctl(self.master, termios.TIOCPKT, struct.pack("i", 1))
        self.slave = os.ttyname(slave)
        # No descriptor of the device kept, as a real board's cable has none: the producer refuses
        # a port another process holds open.
        os.close(slave)
        tmp = self.link.with_name(self.link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(self.slave, tmp)
        os.replace(tmp, self.link)

    def wait_for_reader(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    packet = os.read(self.master, 1024)
                except OSError as exc:  # EIO: no one has the port open yet (we keep no descriptor)
                    if exc.errno != errno.EIO:
                        raise
                    time.sleep(0.05)
                    continue
                if packet and packet[0] & termios.TIOCPKT_FLUSHREAD:
                    return
        raise AssertionError("no reader opened the board's port")

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def line(self, sensor: str, value: float) -> None:
        raw = f"{sensor}!{value:.2f}\r\n".encode()
        self.write(raw)
        self.ledger.append(raw)

    def drain(self, timeout: float = 30) -> None:
        """Wait until the reader has taken every byte written."""
        deadline = time.monotonic() + timeout
        fd = os.open(self.slave, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)  # a look, not a read
        try:
            while time.monotonic() < deadline:
                waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
                if waiting == 0:
                    return
                time.sleep(0.02)
        finally:
            os.close(fd)
        raise AssertionError("the reader did not take what the board wrote")

    def unplug(self) -> None:
        """The cable is pulled: the device disappears and the reader's next read fails."""
        self.link.unlink(missing_ok=True)
        if self.master is not None:
            os.close(self.master)
        self.master = self.slave = None
