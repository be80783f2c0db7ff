"""A detector worker: `python -m workers.detector`. Judges every reading with the configured
detectors and hands the states to the store through the transport."""
from __future__ import annotations

import argparse
import sys

from lib.config import ConfigError, load_config
from lib.detect.detection import Judge, check_detection_config, run_detector
from lib.runtime import setup_logging, stop_event
from lib.transport.base import open_transport


def main(argv=None) -> int:
    log = setup_logging("detector")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--group", default="detectors", help="consumer group (one per independent detector set)")
    args = ap.parse_args(argv)
    try:
        config = load_config()
        check_detection_config(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    transport = open_transport(config)
    consumer = transport.consumer(args.group, sensors=True)
    log.info("judging with %s", ", ".join(config.detection.detectors))
    try:
        n = run_detector(Judge(config), consumer, stop)
        log.info("stopped after judging %d readings", n)
    finally:
        consumer.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
