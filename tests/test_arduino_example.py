"""The example sketch (examples/arduino/) prints lines Vigie reads as readings, at 9600 baud.

There is no AVR toolchain or board here: the sketch is compiled with the host's C++ compiler
against a small stand-in for the Arduino API (Serial, analogRead, delay), run for a few loops
with chosen analog readings, and its output goes through Vigie's own line parser."""

from __future__ import annotations

import shutil
import subprocess

from lib.config import PROJECT_ROOT
from lib.ingest.protocol import Parsed, parse_line

SKETCH = PROJECT_ROOT / "examples/arduino/vigie_two_sensors/vigie_two_sensors.ino"

ARDUINO_STAND_IN = r"""
#include <cstdio>
#include <cstdlib>
const int A0 = 14, A1 = 15;
static int analog[2];
int analogRead(int pin) { return analog[pin - A0]; }
void delay(unsigned long) {}
struct StandInSerial {
  void begin(long baud) { std::fprintf(stderr, "baud %ld\n", baud); }
  void print(const char *text) { std::fputs(text, stdout); }
  // Arduino's Print::println(float, digits): fixed decimals, then CR LF.
  void println(double value, int digits) { std::printf("%.*f\r\n", digits, value); }
} Serial;
#include SKETCH
int main(int argc, char **argv) {
  setup();
  for (int i = 1; i + 1 < argc; i += 2) {
    analog[0] = std::atoi(argv[i]);
    analog[1] = std::atoi(argv[i + 1]);
    loop();
  }
}
"""


def test_the_example_sketch_prints_two_sensors_as_readings_at_9600_baud(tmp_path):
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed to check the example sketch (make system-deps installs it)"
    main = tmp_path / "main.cpp"
    main.write_text(ARDUINO_STAND_IN)
    subprocess.run(
        [compiler, "-Wall", "-Werror", f'-DSKETCH="{SKETCH}"', "-o", str(tmp_path / "sketch"), str(main)],
        check=True,
        capture_output=True,
        text=True,
    )
    # A0, A1 per loop: room temperature and half light; the ends of the ADC's range.
    run = subprocess.run(
        [str(tmp_path / "sketch"), "153", "512", "0", "1023", "1023", "0"], capture_output=True, timeout=30, check=True
    )
    assert run.stderr == b"baud 9600\n"
    lines = run.stdout.split(b"\n")
    assert lines[-1] == b"" and all(line.endswith(b"\r") for line in lines[:-1])
    assert [parse_line(line) for line in lines[:-1]] == [
        Parsed("temperature", 24.78),
        Parsed("lumiere", 50.0),
        Parsed("temperature", -50.0),
        Parsed("lumiere", 100.0),
        Parsed("temperature", 450.0),
        Parsed("lumiere", 0.0),
    ]
