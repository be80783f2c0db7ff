"""A bench for the serial tests: the simulated board on a real pseudo-terminal, the real producer
(in a thread or as its worker process), the embedded transport and the real store (a DuckDB file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from lib.config import PROJECT_ROOT
from lib.ingest.producer import SerialProducer
from lib.ingest.protocol import Parsed, parse_line
from lib.ingest.serial_port import LineSplitter
from lib.ingest.simulator import PseudoBoard, run_board
from lib.messages import INTERNAL
from lib.store.reader import read_db
from lib.store.schema import init_db
from lib.store.sink import run_store
from lib.transport.embedded import EmbeddedTransport


class Rig:
    """Use as a context manager: whatever a test does, no thread or process outlives it."""

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def __init__(self, tmp: Path):
        self.data = Path(tmp) / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.transport = EmbeddedTransport(self.data / "bus.sqlite")
        self.db = self.data / "vigie.duckdb"
        self.threads: list[tuple[threading.Thread, threading.Event]] = []
        self.procs: list[subprocess.Popen] = []

    def board(self, name: str = "arduino") -> PseudoBoard:
        board = PseudoBoard(self.data / "run" / name)
        board.plug()
        return board

    def play(self, board: PseudoBoard, ticks, ledger: Path, **kw) -> threading.Event:
        """Run the board in a thread, its ledger at `ledger`; returns its stop flag. The thread's
        result (lines written) lands in `self.written[board]`."""
        stop = threading.Event()
        self.written = getattr(self, "written", {})

        def go():
            with open(ledger, "ab", buffering=0) as f:
                if board.wait_for_reader(stop, timeout=30):
                    self.written[board] = run_board(board, ticks, stop, ledger=f, linger=True, **kw)

        t = threading.Thread(target=go, name=f"board-{board.link.name}", daemon=True)
        t.start()
        self.threads.append((t, stop))
        return stop

    def producer_thread(self, port: Path, **kw) -> SerialProducer:
        stop = threading.Event()
        producer = SerialProducer(self.transport.producer(), str(port), 9600, 0.2, **kw)
        t = threading.Thread(target=producer.run, args=(stop,), name="producer", daemon=True)
        t.start()
        self.threads.append((t, stop))
        return producer

    def producer_process(self, port: Path, *args: str, output=subprocess.PIPE) -> subprocess.Popen:
        env = dict(os.environ, VIGIE_PATHS_DATA_DIR=str(self.data), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.producer", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """Threads in reverse start order (producers stop before the boards they read), then
        producer processes. Safe to call twice."""
        for t, stop in reversed(self.threads):
            stop.set()
            t.join(30)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def store(self) -> int:
        """The single writer drains the transport into the DuckDB file, as workers/store.py does."""
        init_db(self.db)
        consumer = self.transport.consumer("store", topics=INTERNAL, sensors=True)
        try:
            stop = threading.Event()
            stop.set()
            return run_store(self.db, consumer, stop, flush_interval=0.05)
        finally:
            consumer.close()

    def query(self, sql: str, params=()):
        with read_db(self.db) as conn:
            return conn.execute(sql, params).fetchall()


def ledger_lines(path: Path) -> list[bytes]:
    """The lines the board wrote, as the producer cuts them (without the `\\n`)."""
    splitter = LineSplitter(512)
    return [line for line, _ in splitter.feed(Path(path).read_bytes())]


def expected(path: Path) -> tuple[Counter, Counter]:
    """(readings as (sensor, value) -> count, rejects as reason -> count) the ledger's lines give."""
    readings, rejects = Counter(), Counter()
    splitter = LineSplitter(512)
    for line, too_long in splitter.feed(Path(path).read_bytes()):
        p = parse_line(line) if not too_long else None
        if isinstance(p, Parsed):
            readings[(p.sensor, p.value)] += 1
        else:
            rejects[p.reason if p else "too_long"] += 1
    return readings, rejects
