"""The simulated Arduino: `python -m workers.simulator [--rate N] [--count N] [--ledger FILE]`."""
from __future__ import annotations

import argparse
import sys
import time

from lib.config import ConfigError, load_config
from lib.runtime import setup_logging, stop_event
from lib.simulator import PseudoBoard, ScenarioError, SignalModel, load_scenario, run_board
from lib.transport.base import TRUTH, json_message, open_transport


def main(argv=None) -> int:
    log = setup_logging("simulator")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", help="scenario TOML (default: [simulator] scenario)")
    ap.add_argument("--rate", type=float, help="lines per second in total (default: [simulator] rate)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--count", type=int, help="stop writing after this many lines (the port stays open)")
    ap.add_argument("--ledger", help="append every line written to this file (for tests)")
    args = ap.parse_args(argv)
    try:
        config = load_config()
        scenario = load_scenario(config.resolve(args.scenario or config.simulator.scenario))
    except (ConfigError, ScenarioError) as exc:
        log.error("%s", exc)
        return 2
    if config.serial.port != "sim":
        log.info("[serial] port is %s, not the simulator: nothing to simulate", config.serial.port)
        return 0
    rate = args.rate or scenario.rate or config.simulator.rate
    seed = config.simulator.seed if args.seed is None else args.seed
    stop = stop_event()
    transport = open_transport(config)
    out = transport.producer()
    run_id = f"sim-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{seed}"

    def on_injection(inj, wall0):
        out.send([json_message(TRUTH, inj.sensor, {
            "run": run_id, "sensor": inj.sensor, "kind": inj.kind,
            "start_us": int((wall0 + inj.start) * 1e6), "end_us": int((wall0 + max(inj.end, inj.start)) * 1e6)})])
        out.flush()

    board = PseudoBoard(config.sim_port_link)
    board.plug()
    ledger_path = args.ledger or config.simulator.ledger
    count = args.count if args.count is not None else (config.simulator.count or None)
    ledger = open(ledger_path, "ab", buffering=0) if ledger_path else None
    try:
        if not board.wait_for_reader(stop):
            return 0
        n = run_board(board, SignalModel(scenario, seed), rate, stop, on_injection, ledger, count)
        log.info("wrote %d lines at %.1f lines/s", n, rate)
        # Keep the port open after --count: closing it would look like an unplugged board.
        stop.wait()
    finally:
        if ledger:
            ledger.close()
        out.close()
        board.drain()
        board.unplug()
    return 0


if __name__ == "__main__":
    sys.exit(main())
