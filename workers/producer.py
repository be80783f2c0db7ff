"""The serial producer: `python -m workers.producer [--port PATH|auto|sim|sim:NAME] [--name NAME] [--baud N]`.

One producer reads one board. `make run` starts one per `[serial] port` entry, each with its
`--port` and `--name` (lib.ingest.boards); run alone, it reads the one configured port.
"""

from __future__ import annotations

import argparse
import sys

from lib.config import ConfigError, load_config
from lib.ingest.boards import AUTO, board_for
from lib.ingest.gate import SensorGate
from lib.ingest.producer import FLUSH_RETRY_MAX_S, TRANSPORT_WRITE_ERRORS, SerialProducer, write_error_cause
from lib.ingest.serial_port import PortError, find_arduino
from lib.ingest.status import StatusWriter
from lib.runtime import setup_logging, stop_event
from lib.supervision import die_with_supervisor
from lib.transport import open_transport


def open_transport_when_possible(config, stop, log):
    """(transport, producer), retried with backoff while the transport's files cannot be opened (a
    full disk): exiting would only make supervisord give up on the producer (FATAL) within
    seconds, for an outage that ends when space comes back. None when stopped first."""
    backoff, told = 0.5, False
    while not stop.is_set():
        try:
            transport = open_transport(config)
            return transport, transport.producer()
        except TRANSPORT_WRITE_ERRORS as exc:
            if not told:
                log.error(
                    "%s: cannot open the transport (%s); retrying every %.1f-%.0fs",
                    write_error_cause(exc),
                    exc,
                    0.5,
                    FLUSH_RETRY_MAX_S,
                )
                told = True
            stop.wait(backoff)
            backoff = min(backoff * 2, FLUSH_RETRY_MAX_S)
    return None


def main(argv=None) -> int:
    log = setup_logging("producer")
    die_with_supervisor()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--port",
        help="device path, 'auto' to find an Arduino, 'sim' for the simulator "
        "(default: [serial] port when it names one port)",
    )
    ap.add_argument(
        "--name", help="the board's name: status file <data>/run/producer-NAME.json (default: from the port)"
    )
    ap.add_argument("--baud", type=int)
    ap.add_argument("--timeout", type=float)
    ap.add_argument(
        "--ack", action="store_true", help="acknowledge stored lines back on the port (on by itself for the simulator)"
    )
    args = ap.parse_args(argv)
    try:
        overrides = {k: v for k, v in (("baud", args.baud), ("timeout", args.timeout)) if v is not None}
        config = load_config(overrides={"serial": overrides})
        entries = (args.port,) if args.port else config.serial.port
        if len(entries) > 1:
            raise ConfigError(
                f"[serial] port lists {len(entries)} ports: a producer reads one, given"
                f" with --port (make run starts one per port)"
            )
        board = board_for(entries[0])
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    device = board.device(config)
    status = StatusWriter(config.run_dir, args.name or board.name, device)
    opened = open_transport_when_possible(config, stop, log)
    if opened is None:
        return 0
    transport, out = opened
    s = config.serial
    gate = SensorGate(s.sensors, s.new_sensor_lines, s.unconfirmed_after_s, s.max_sensors)
    try:
        SerialProducer(
            out,
            device,
            s.baud,
            s.timeout,
            s.max_line,
            find_port=find_arduino if board.entry == AUTO else None,
            ack=args.ack or board.simulated,
            status=status,
            max_held=s.max_held_lines,
            gate=gate,
        ).run(stop)
    except PortError as exc:
        log.error("%s", exc)
        return 2
    finally:
        out.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
