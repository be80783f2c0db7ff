"""The serial producer: `python -m workers.producer [--port PATH|auto|sim] [--baud N]`."""
from __future__ import annotations

import argparse
import sys

from lib.config import ConfigError, load_config
from lib.ingest.producer import SerialProducer
from lib.runtime import setup_logging, stop_event
from lib.ingest.serial_port import PortError, resolve_port
from lib.transport.base import open_transport


def main(argv=None) -> int:
    log = setup_logging("producer")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", help="device path, 'auto' to find an Arduino, 'sim' for the simulator")
    ap.add_argument("--baud", type=int)
    ap.add_argument("--timeout", type=float)
    ap.add_argument("--ack", action="store_true",
                    help="acknowledge stored lines back on the port (on by itself for the simulator)")
    args = ap.parse_args(argv)
    try:
        overrides = {k: v for k, v in (("port", args.port), ("baud", args.baud), ("timeout", args.timeout)) if v is not None}
        config = load_config(overrides={"serial": overrides})
        port = resolve_port(config.serial.port, config.sim_port_link)
    except (ConfigError, PortError) as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    transport = open_transport(config)
    out = transport.producer()
    find_port = (lambda: resolve_port("auto", config.sim_port_link)) if config.serial.port == "auto" else None
    try:
        SerialProducer(out, port, config.serial.baud, config.serial.timeout, config.serial.max_line,
                       find_port=find_port, ack=args.ack or config.serial.port == "sim").run(stop)
    except PortError as exc:
        log.error("%s", exc)
        return 2
    finally:
        out.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
