"""The simulated Arduino: `python -m workers.simulator [--port sim|sim:NAME] [--scenario F | --replay CSV] [--rate N]`.

One simulator plays one simulated board of `[serial] port` (lib.ingest.boards): `sim` plays
`[simulator] scenario` at <data>/run/arduino, `sim:NAME` plays data/scenarios/NAME.toml at
<data>/run/NAME. With `[simulator] ledger` set, a `sim:NAME` board's ledger is `<ledger>.NAME`.

SIGUSR1 unplugs the board for `[simulator] unplug_s` seconds, as pulling the USB cable would.
"""

from __future__ import annotations

import argparse
import queue
import re
import signal
import sys
import time

from lib.config import ConfigError, load_config
from lib.ingest.boards import SIM, board_for
from lib.ingest.simulator import (
    PseudoBoard,
    ScenarioError,
    SignalModel,
    Unplug,
    load_scenario,
    replay_ticks,
    run_board,
    scenario_ticks,
)
from lib.messages import Truth
from lib.runtime import setup_logging, stop_event
from lib.supervision import die_with_supervisor
from lib.transport import open_transport


def parse_unplug(text: str) -> tuple[int, Unplug]:
    """`LINES:SECONDS[:partial]`: after LINES lines, unplug for SECONDS (cutting a line if partial)."""
    m = re.fullmatch(r"(\d+):(\d+(?:\.\d*)?)(:partial)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected LINES:SECONDS[:partial], got {text!r}")
    return int(m[1]), Unplug(float(m[2]), bool(m[3]))


def main(argv=None) -> int:
    log = setup_logging("simulator")
    die_with_supervisor()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--port",
        help="the simulated board of [serial] port to play: sim or sim:NAME "
        "(default: sim, when [serial] port lists it)",
    )
    ap.add_argument("--scenario", help="scenario TOML (default: the board's, or [simulator] scenario)")
    ap.add_argument("--replay", help="play a NAB-format CSV (timestamp,value) as one sensor instead of a scenario")
    ap.add_argument("--sensor", help="the replayed sensor's name (default: from the file name)")
    ap.add_argument("--speed", type=float, help="replay speed: 1 is the file's real pace (default: [simulator] speed)")
    ap.add_argument(
        "--rate",
        type=float,
        help="lines per second in total (default: [simulator] rate; for a replay, overrides its timestamps)",
    )
    ap.add_argument("--seed", type=int)
    ap.add_argument("--count", type=int, help="stop writing after this many lines (the port stays open)")
    ap.add_argument("--ledger", help="append every line written to this file (for tests)")
    ap.add_argument(
        "--unplug",
        type=parse_unplug,
        action="append",
        default=[],
        metavar="LINES:SECONDS[:partial]",
        help="unplug for SECONDS after LINES lines (repeatable)",
    )
    args = ap.parse_args(argv)
    try:
        config = load_config()
        sim = config.simulator
        if args.port is None and SIM not in config.serial.port:
            log.info("[serial] port is %s, not the simulator: nothing to simulate", ", ".join(config.serial.port))
            return 0
        spec = board_for(args.port or SIM)
        if not spec.simulated:
            raise ConfigError(f"--port {args.port}: not a simulated board (sim or sim:NAME)")
        seed = sim.seed if args.seed is None else args.seed
        # [simulator] replay stands in for [simulator] scenario: the plain "sim" board's.
        replay = args.replay or (sim.replay if spec.entry == SIM else "")
        if replay:
            path = config.resolve(replay)
            sensor = args.sensor or sim.replay_sensor or re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)
            ticks = replay_ticks(path, sensor, args.speed or sim.speed, args.rate)
            run_id = f"replay-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{sensor}"
            what = f"replay of {path} as {sensor!r}"
        else:
            scenario = load_scenario(
                config.resolve(args.scenario)
                if args.scenario
                else spec.scenario(config) or config.resolve(sim.scenario)
            )
            rate = args.rate or scenario.rate or sim.rate
            ticks = scenario_ticks(SignalModel(scenario, seed), rate)
            run_id = f"sim-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{seed}"
            if spec.entry != SIM:
                run_id += f"-{spec.name}"
            what = f"{len(scenario.sensors)} sensor(s) at {rate:g} lines/s, seed {seed}"
        # A replay reads its file lazily: look at its first line now, so a bad file fails here.
        first = next(ticks, None)
    except (ConfigError, ScenarioError) as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    requests: queue.SimpleQueue[Unplug] = queue.SimpleQueue()
    signal.signal(signal.SIGUSR1, lambda *_: requests.put(Unplug(sim.unplug_s)))
    transport = open_transport(config)
    out = transport.producer()

    def on_injection(inj, start_wall):
        out.send(
            [
                Truth(
                    run_id,
                    inj.sensor,
                    inj.kind,
                    int(start_wall * 1e6),
                    int((start_wall + max(inj.end - inj.start, 0.0)) * 1e6),
                ).message()
            ]
        )
        out.flush()

    def all_ticks():
        if first is not None:
            yield first
        yield from ticks

    link = config.run_dir / spec.name
    ledger_path = args.ledger or (sim.ledger if spec.entry == SIM or not sim.ledger else f"{sim.ledger}.{spec.name}")
    board = PseudoBoard(link)
    board.plug()
    count = args.count if args.count is not None else (sim.count or None)
    ledger = open(ledger_path, "ab", buffering=0) if ledger_path else None
    log.info("playing %s (run %s)", what, run_id)
    try:
        if not board.wait_for_reader(stop):
            return 0
        n = run_board(board, all_ticks(), stop, on_injection, ledger, count, dict(args.unplug), requests, linger=True)
        log.info("wrote %d lines (%d bytes sent again after a reader crashed)", n, board.resent)
    finally:
        if ledger:
            ledger.close()
        out.close()
        board.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
