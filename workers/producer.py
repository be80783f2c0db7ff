"""The serial producer: `python -m workers.producer [--port PATH|auto|sim|sim:NAME] [--name NAME] [--baud N]`.

One producer reads one board. `make run` starts one per `[serial] port` entry, each with its
`--port` and `--name` (lib.ingest.boards); run alone, it reads the one configured port.
"""
from __future__ import annotations

import argparse
import sys

from lib.config import ConfigError, load_config
from lib.ingest.boards import AUTO, board_for
from lib.ingest.producer import SerialProducer
from lib.ingest.serial_port import PortError, find_arduino
from lib.ingest.status import StatusWriter
from lib.runtime import setup_logging, stop_event
from lib.transport import open_transport


def main(argv=None) -> int:
    log = setup_logging("producer")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", help="device path, 'auto' to find an Arduino, 'sim' for the simulator "
                                   "(default: [serial] port when it names one port)")
    ap.add_argument("--name", help="the board's name: status file <data>/run/producer-NAME.json "
                                   "(default: from the port)")
    ap.add_argument("--baud", type=int)
    ap.add_argument("--timeout", type=float)
    ap.add_argument("--ack", action="store_true",
                    help="acknowledge stored lines back on the port (on by itself for the simulator)")
    args = ap.parse_args(argv)
    try:
        overrides = {k: v for k, v in (("baud", args.baud), ("timeout", args.timeout)) if v is not None}
        config = load_config(overrides={"serial": overrides})
        entries = (args.port,) if args.port else config.serial.port
        if len(entries) > 1:
            raise ConfigError(f"[serial] port lists {len(entries)} ports: a producer reads one, given"
                              f" with --port (make run starts one per port)")
        board = board_for(entries[0])
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    device = board.device(config)
    status = StatusWriter(config.run_dir, args.name or board.name, device)
    transport = open_transport(config)
    out = transport.producer()
    try:
        SerialProducer(out, device, config.serial.baud, config.serial.timeout, config.serial.max_line,
                       find_port=find_arduino if board.entry == AUTO else None,
                       ack=args.ack or board.simulated, status=status).run(stop)
    except PortError as exc:
        log.error("%s", exc)
        return 2
    finally:
        out.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
