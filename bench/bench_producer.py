"""Lines per second the serial producer sustains on one core, and what 9600 baud means, beside the
original program's way (docs/origins.md; its rows are called "seed"), in the same run.

- Vigie: a board process writes pre-built lines into a real pseudo-terminal as fast as the reader
  takes them; the producer (this process: one core) reads what is waiting in one call, cuts lines,
  parses, stamps and sends them to the embedded transport (a SQLite file), flushing a few times a
  second. Measured without and with acknowledgements (the simulator's kill -9 protection).
- Seed: the same lines read with `readline()`, decoded, split at the last "!", and the whole
  history pickle re-read and re-written for every line, as the original program's producer does;
  sent to the same transport.
- 9600 baud: a serial line carries about 960 bytes/s (10 bits a byte). A pseudo-terminal ignores
  the baud rate, so the board paces its bytes to 960/s; the producer's CPU share is measured.
  For the original program, the pickle cost grows with the history: the table gives how long it
  keeps up.

Run: `python -m bench.bench_producer [--n N] [--seed-n N] [--baud-s S]` or `make bench`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lib.config import PROJECT_ROOT
from lib.ingest.producer import SerialProducer
from lib.ingest.protocol import format_line, parse_line
from lib.ingest.serial_port import open_port
from lib.transport.embedded import EmbeddedTransport

SENSORS = ("humidite", "temperature", "pression", "co2")


def make_lines(n: int) -> bytes:
    """Realistic board lines, 14 to 21 bytes each."""
    return b"".join(format_line(SENSORS[i % 4], 20.0 + (i * 7919 % 1000) / 37.0) for i in range(n))


# -- the board, in its own process --------------------------------------------------------------


def board_main(link: str, lines_file: str, bytes_per_s: float) -> int:
    """Write the file's bytes to a pseudo-terminal published at `link`, as fast as the reader takes
    them, or paced at `bytes_per_s`; then keep the port open until terminated."""
    import signal

    from lib.ingest.simulator import PseudoBoard

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    data = Path(lines_file).read_bytes()
    board = PseudoBoard(Path(link))
    board.plug()
    if not board.wait_for_reader(stop, timeout=30):
        return 1
    t0 = time.monotonic()
    step = 65536 if not bytes_per_s else max(1, int(bytes_per_s / 50))
    for i in range(0, len(data), step):
        if bytes_per_s:
            delay = t0 + i / bytes_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if not board.send(data[i : i + step], stop):
            break
    stop.wait()
    board.close()
    return 0


class Board:
    def __init__(self, tmp: Path, data: bytes, bytes_per_s: float = 0.0):
        self.link = tmp / "arduino"
        lines_file = tmp / "lines.bin"
        lines_file.write_bytes(data)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_producer",
                "--board",
                str(self.link),
                str(lines_file),
                str(bytes_per_s),
            ],
            cwd=PROJECT_ROOT,
        )
        deadline = time.monotonic() + 30
        while not self.link.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the board process did not publish its port")
            time.sleep(0.02)

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)


# -- the two readers ------------------------------------------------------------------------------


def run_vigie(tmp: Path, data: bytes, n: int, ack: bool = False, bytes_per_s: float = 0.0):
    """(wall seconds, CPU seconds of this process) for the producer to take `n` lines."""
    board = Board(tmp, data, bytes_per_s)
    transport = EmbeddedTransport(tmp / f"bus-{ack}-{bytes_per_s}.sqlite")
    producer = SerialProducer(transport.producer(), str(board.link), 9600, 0.2, ack=ack)
    stop = threading.Event()
    thread = threading.Thread(target=producer.run, args=(stop,))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        thread.start()
        while producer.counts["readings"] < n:
            time.sleep(0.002)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        stop.set()
        thread.join()
        board.close()
    return wall, cpu


def run_seed(tmp: Path, data: bytes, n: int):
    """The original program's producer loop on the same port; returns (wall, cpu, seconds per line
    over the last 10% of lines)."""
    board = Board(tmp, data)
    transport = EmbeddedTransport(tmp / "bus-seed.sqlite")
    out = transport.producer()
    history = tmp / "saveLISTEDONNEE.txt"
    with open(history, "wb") as f:
        pickle.dump([], f)
    port = open_port(str(board.link), 9600, 5.0)
    from lib.messages import reading_message

    try:
        t0, c0 = time.perf_counter(), time.process_time()
        last_flush = t0
        t_tail = None
        for i in range(n):
            if i == n - n // 10:
                t_tail = time.perf_counter()
            msg = port.readline().decode("utf-8")[:-2]
            with open(history, "rb") as f:
                lst = pickle.load(f)
            lst.append((msg, time.time()))
            with open(history, "wb") as f:
                pickle.dump(lst, f)
            idx = msg.rfind("!")
            out.send([reading_message(msg[:idx], msg[idx + 1 :], "seed", i, 0)])
            if time.perf_counter() - last_flush > 0.05:  # kafka-python batches sends too
                out.flush()
                last_flush = time.perf_counter()
        out.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tail = (time.perf_counter() - t_tail) / (n // 10)
    finally:
        port.close()
        board.close()
    return wall, cpu, tail


def pickle_cost(size: int) -> float:
    """Seconds for one load + dump of a seed history of `size` lines (page cache, no fsync)."""
    lst = [(f"humidite!{20 + i % 100 / 7:.2f}", 1.7e9 + i) for i in range(size)]
    best = float("inf")
    with tempfile.NamedTemporaryFile() as f:
        for _ in range(3):  # the best of three: other processes only ever add time
            t0 = time.perf_counter()
            f.seek(0)
            pickle.dump(lst, f)
            f.flush()
            f.seek(0)
            pickle.load(f)
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000, help="lines for Vigie's throughput runs")
    ap.add_argument(
        "--seed-n", type=int, default=5_000, help="lines for the original program's run (its cost grows per line)"
    )
    ap.add_argument("--baud-s", type=float, default=5.0, help="seconds of the 9600-baud run")
    ap.add_argument("--board", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.board:
        return board_main(args.board[0], args.board[1], float(args.board[2]))
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VIGIE_LOG_LEVEL", "WARNING")

    data = make_lines(args.n)
    avg_len = len(data) / args.n
    t0 = time.perf_counter()
    for line in data.splitlines():
        parse_line(line)
    parse_rate = args.n / (time.perf_counter() - t0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ack in (False, True):
            d = Path(tmp) / f"v{ack}"
            d.mkdir()
            wall, cpu = run_vigie(d, data, args.n, ack=ack)
            rows.append(
                (f"Vigie producer{' + acks' if ack else ''}", args.n, args.n / wall, cpu / wall, 1e6 * cpu / args.n)
            )
        d = Path(tmp) / "seed"
        d.mkdir()
        seed_data = make_lines(args.seed_n)
        wall, cpu, tail = run_seed(d, seed_data, args.seed_n)
        rows.append(
            ("seed (readline + pickle re-dump)", args.seed_n, args.seed_n / wall, cpu / wall, 1e6 * cpu / args.seed_n)
        )

        # 9600 baud: 960 bytes/s paced by the board.
        bps = 960.0
        baud_n = int(args.baud_s * bps / avg_len)
        d = Path(tmp) / "baud"
        d.mkdir()
        baud_wall, baud_cpu = run_vigie(d, make_lines(baud_n), baud_n, ack=True, bytes_per_s=bps)

    print(f"lines average {avg_len:.1f} bytes; parse_line alone: {parse_rate:,.0f} lines/s\n")
    # lines per CPU-second is what one core sustains; lines/s (wall) also depends on how much of a
    # core the machine gave this process during the run (the CPU share).
    print(
        f"{'pty -> parse -> embedded transport':<36} {'lines':>8} {'lines/s':>10} {'CPU share':>10} "
        f"{'CPU us/line':>12} {'lines/CPU-s':>12}"
    )
    for name, n, rate, share, us in rows:
        print(f"{name:<36} {n:>8,} {rate:>10,.0f} {share:>10.0%} {us:>12.1f} {1e6 / us:>12,.0f}")
    print(f"\nseed: last 10% of its {args.seed_n:,} lines took {tail * 1e3:.2f} ms each (the pickle grows)")

    line_rate = bps / avg_len
    print(
        f"\n9600 baud = {bps:.0f} bytes/s = {line_rate:.0f} lines/s of {avg_len:.1f} bytes "
        f"(a 1-sensor board printing 'humidite!42.70\\r\\n' gets {bps / 16:.0f} lines/s)"
    )
    print(
        f"Vigie at 9600 baud: {baud_n} lines in {baud_wall:.1f}s, producer CPU {baud_cpu / baud_wall:.1%} of one core; "
        f"one core (with acks) takes {1e6 / rows[1][4] / line_rate:,.0f} such boards' worth of lines"
    )
    print(
        f"\n{'seed history size':>18} {'pickle load+dump':>17} {'max lines/s':>12} {'reached at 9600 baud after':>27}"
    )
    for size in (1_000, 10_000, 20_000, 50_000, 100_000, 300_000):
        cost = pickle_cost(size)
        when = size / line_rate
        print(
            f"{size:>18,} {cost * 1e3:>14.2f} ms {1 / cost:>12,.0f} {when / 3600:>24.1f} h"
            + ("   <- falls behind the board" if 1 / cost < line_rate else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
