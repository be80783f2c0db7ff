"""Choosing a port: `--port auto` with serial.tools.list_ports, and what the operator is told."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from serial.tools.list_ports_common import ListPortInfo

from lib.config import PROJECT_ROOT
from lib.ingest.serial_port import PortError, find_arduino, find_boards


def port(device: str, vid=None, description="n/a", manufacturer=None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.description, info.manufacturer = vid, description, manufacturer
    return info


def test_auto_prefers_an_official_arduino_and_says_which(caplog):
    ports = [
        port("/dev/ttyS0"),
        port("/dev/ttyUSB0", 0x1A86, "USB2.0-Serial"),
        port("/dev/ttyACM1", 0x2341, "Arduino Uno"),
    ]
    with caplog.at_level("INFO"):
        assert find_arduino(ports) == "/dev/ttyACM1"
    assert "chose /dev/ttyACM1 (Arduino Uno, USB 2341:0000 Arduino)" in caplog.text and "/dev/ttyUSB0" in caplog.text


def test_auto_takes_a_clone_by_its_usb_chip_or_name():
    assert find_arduino([port("/dev/ttyS0"), port("/dev/cu.x", 0x10C4, "CP2102")]) == "/dev/cu.x"
    assert find_arduino([port("/dev/ttyS5", description="x", manufacturer="Arduino LLC")]) == "/dev/ttyS5"


def test_auto_with_no_board_names_the_ports_it_saw():
    with pytest.raises(PortError, match=r"no Arduino-like serial device found; ports seen: /dev/ttyS0 \(ttyS0\)"):
        find_arduino([port("/dev/ttyS0", description="ttyS0")])
    with pytest.raises(PortError, match="ports seen: none"):
        find_arduino([])


def test_permission_denied_is_one_clear_line(tmp_path):
    """A port the user may not open (the tests run as root, so the producer runs without root's
    right to bypass file permissions, like a user outside the 'dialout' group)."""
    master, slave = pty.openpty()
    try:
        name = os.ttyname(slave)
        os.chmod(name, 0)
        drop = "-dac_override,-dac_read_search"
        r = subprocess.run(
            [
                "setpriv",
                f"--bounding-set={drop}",
                f"--inh-caps={drop}",
                sys.executable,
                "-m",
                "workers.producer",
                "--port",
                name,
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, VIGIE_PATHS_DATA_DIR=str(tmp_path)),
        )
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2, r.stderr
    assert f"permission denied on {name} (is the user in the 'dialout' group?)" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "vid, vendor",
    [
        (0x2A03, "Arduino (arduino.org)"),
        (0x1A86, "CH340/CH341"),
        (0x0403, "FTDI"),
        (0x10C4, "CP210x"),
        (0x067B, "PL2303"),
    ],
)
def test_auto_knows_the_usual_usb_serial_chips_by_vendor_id_and_names_them(vid, vendor, caplog):
    """Found by vendor id alone (a device name and description that say nothing), and named."""
    with caplog.at_level("INFO"):
        assert find_arduino([port("/dev/ttyS0"), port("/dev/cu.board", vid, "USB Serial")]) == "/dev/cu.board"
    assert f"chose /dev/cu.board (USB Serial, USB {vid:04x}:0000 {vendor}" in caplog.text


def test_auto_orders_official_boards_then_known_chips_then_names():
    ports = [port("/dev/ttyACM0"), port("/dev/ttyUSB1", 0x0403), port("/dev/ttyACM2", 0x2341)]
    assert [p.device for p in find_boards(ports)] == ["/dev/ttyACM2", "/dev/ttyUSB1", "/dev/ttyACM0"]
