"""The serial port is Vigie's alone, and a torn line never becomes a sensor (real pseudo-terminal,
real producer, real store).

Before: a second reader (an IDE's serial monitor, another Vigie) took bytes from the stream (7 of
3,987 readings lost in 20 s), and torn lines such as "emperature!21.5" became permanent sensors.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

from lib.config import PROJECT_ROOT
from lib.ingest import protocol
from lib.ingest.gate import SensorGate
from lib.ingest.producer import SerialProducer
from tests.serial_rig import Rig
from tests.system import wait_for

HOLDER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOCTTY)
print("holding", flush=True)
time.sleep(60)
"""


def test_a_port_held_by_another_program_is_refused_naming_it_and_opened_once_free(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with Rig(tmp_path) as rig:
        board = rig.board()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(board.link)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "holding"
            stop = threading.Event()
            producer = SerialProducer(rig.transport.producer(), str(board.link), 9600, 0.2)
            thread = threading.Thread(target=producer.run, args=(stop,), daemon=True)
            thread.start()
            rig.threads.append((thread, stop))
            wait_for(lambda: f"pid {holder.pid}" in caplog.text, 20, 0.1, what="the holder named in the log")
            assert "is in use by" in caplog.text and producer.counts["readings"] == 0
        finally:
            holder.kill()
            holder.wait()
        # Free again: the producer opens it, and holds it exclusively from then on.
        wait_for(lambda: board.wait_for_reader(threading.Event(), timeout=0.1), 20, 0.2, what="the producer's open")
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from lib.ingest.serial_port import open_port, PortError\n"
                "try:\n    open_port(sys.argv[1], 9600, 0.2)\nexcept PortError as e:\n"
                "    print('busy' if e.busy else 'other', e)\nelse:\n    print('opened')",
                str(board.link),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.stdout.startswith("busy") and "pytest" in second.stdout or "python" in second.stdout, second


def _producer_lines(tmp_path, lines: list[bytes], gate: SensorGate) -> Rig:
    rig = Rig(tmp_path)
    producer = SerialProducer(rig.transport.producer(), "/dev/null", 9600, gate=gate)
    for i, line in enumerate(lines):
        producer.handle_line(line, 1_700_000_000_000_000 + i * 1000)
    producer._expire_held(everything=True)  # what a stop does with names still unconfirmed
    producer.maybe_flush(force=True)
    rig.store()
    return rig


def test_a_torn_name_is_a_reject_and_a_new_real_sensor_loses_nothing(tmp_path):
    lines = [
        b"temperature!21.5",
        b"humidite!40.1",
        b"emperature!21.6",  # torn once by a second reader
        b"temperature!21.7",
        b"humidite!40.2",
        b"temperature!21.8",
        b"pression!1013.1",
        b"pression!1013.2",
        b"pression!1013.3",
        b"pression!1013.4",  # a new sensor
        b"humidite!40.3",
        b"hmidite!40.4",
    ]
    rig = _producer_lines(tmp_path, lines, SensorGate(confirm_lines=3))
    readings = rig.query("SELECT sensor, count(*) FROM readings GROUP BY 1 ORDER BY 1")
    assert readings == [("humidite", 3), ("pression", 4), ("temperature", 3)]
    rejects = rig.query("SELECT reason, raw FROM rejects ORDER BY seq")
    assert rejects == [(protocol.UNCONFIRMED_SENSOR, "emperature!21.6"), (protocol.UNCONFIRMED_SENSOR, "hmidite!40.4")]


def test_with_a_sensor_list_any_other_name_is_a_reject_and_the_count_is_bounded(tmp_path):
    lines = [b"temperature!21.5", b"emperature!21.6", b"humidite!40", b"a!1", b"b!2"]
    rig = _producer_lines(tmp_path, lines, SensorGate(sensors=("temperature", "humidite", "a", "b"), max_sensors=3))
    assert rig.query("SELECT sensor FROM readings ORDER BY seq") == [("temperature",), ("humidite",), ("a",)]
    assert rig.query("SELECT reason FROM rejects ORDER BY seq") == [
        (protocol.UNKNOWN_SENSOR,),
        (protocol.TOO_MANY_SENSORS,),
    ]


def test_distinct_names_are_bounded_without_a_list_too(tmp_path):
    gate = SensorGate(confirm_lines=1, max_sensors=100)
    verdicts = [gate.admit(f"s{i}", i)[0] for i in range(10_000)]
    assert verdicts.count(None) == 100 and verdicts.count(protocol.TOO_MANY_SENSORS) == 9_900
    assert len(gate.known) == 100
