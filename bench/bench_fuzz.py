"""Fuzz the line parser with a million random lines: no exception, every reject has a
documented reason and a printable raw text, and the table counts rejects by reason.

    python -m bench.bench_fuzz [--lines 1000000] [--seed 7]

Lines come from five generators in turn: random bytes, mutations of good lines (a byte changed,
inserted or deleted), plausible lines with tricky values (nan, 1e999, "4,2", unicode digits),
hostile sensor names (quotes, SQL, paths, control characters), and lines longer than max_line.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

from lib.ingest.protocol import MAX_LINE, REASONS, Parsed, Rejected, parse_line

GOOD = [b"humidite!42.7", b"temperature!21,5", b"t!-0.5", b"a.b-c_d!1e3", b"x!+.5", b"capteur_2!  7  "]
VALUES = [
    b"nan",
    b"NaN",
    b"inf",
    b"-Infinity",
    b"1e999",
    b"-1e-999",
    b"4,2",
    b"4.2.1",
    b"",
    b" ",
    b"0x1F",
    "\u0664\u0662".encode(),
    "\uff14".encode(),
    b"1_000",
    b"--1",
    b"1e",
    b".",
    b",",
    b"+",
    b"42\x00",
]
NAMES = [
    b"a'b",
    b'a"b',
    b"x; DROP TABLE readings; --",
    b"../../etc/passwd",
    b"_vigie.states",
    b"__consumer",
    b"a b",
    b"\xc3\xa9t\xc3\xa9",
    b"\x1b[31mred",
    b"",
    b".",
    b"..",
    b"<script>",
    b"a" * 250,
    b"a" * 249,
    b"Robert'); --",
    b"a\tb",
    b"%s%n",
    b"${jndi:x}",
]


def random_lines(rng: random.Random, n: int):
    for i in range(n):
        kind = i % 5
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 80)) + rng.choice([b"", b"\r\n", b"\n"])
        elif kind == 1:
            line = bytearray(rng.choice(GOOD))
            for _ in range(rng.randrange(1, 4)):
                op, pos = rng.randrange(3), rng.randrange(len(line) + 1)
                if op == 0 and pos < len(line):
                    line[pos] = rng.randrange(256)
                elif op == 1:
                    line.insert(pos, rng.randrange(256))
                elif pos < len(line):
                    del line[pos]
            yield bytes(line)
        elif kind == 2:
            yield rng.choice([b"humidite", b"t", b"x.y"]) + b"!" + rng.choice(VALUES) + rng.choice([b"", b"\r\n"])
        elif kind == 3:
            yield rng.choice(NAMES) + rng.choice([b"!", b"!!", b""]) + rng.choice([b"1.5", b"2", b"nan"])
        else:
            yield rng.randbytes(1) * rng.randrange(MAX_LINE - 2, MAX_LINE + 3) + b"!1"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    outcomes, crashes, bad = Counter(), Counter(), []
    t0 = time.perf_counter()
    for line in random_lines(rng, args.lines):
        try:
            result = parse_line(line)
        except Exception as exc:  # what this bench exists to catch: count it, keep going
            crashes[type(exc).__name__] += 1
            if len(bad) < 5:
                bad.append((line, repr(exc)))
            continue
        if isinstance(result, Parsed):
            outcomes["(reading)"] += 1
        elif (
            isinstance(result, Rejected)
            and result.reason in REASONS
            and result.raw.isascii()
            and result.raw.isprintable()
        ):
            outcomes[result.reason] += 1
        else:
            crashes["undocumented result"] += 1
            if len(bad) < 5:
                bad.append((line, repr(result)))
    elapsed = time.perf_counter() - t0
    print(
        f"{args.lines} random lines (seed {args.seed}) through lib.ingest.protocol.parse_line in {elapsed:.1f}s "
        f"({args.lines / elapsed:,.0f} lines/s, generation included)\n"
    )
    print("| outcome | lines | share |\n|---|---|---|")
    for reason, n in outcomes.most_common():
        print(f"| {reason} | {n} | {n / args.lines:.1%} |")
    print(f"| exceptions | {sum(crashes.values())} | {sum(crashes.values()) / args.lines:.1%} |")
    for line, what in bad:
        print(f"  example: {line[:80]!r} -> {what}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
