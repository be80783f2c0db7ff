"""The store: `python -m workers.store`. The only process that writes the DuckDB file."""
from __future__ import annotations

import argparse
import sys
import threading

from lib.config import ConfigError, load_config
from lib.runtime import setup_logging, stop_event
from lib.sink import run_store
from lib.storage import init_db
from lib.transport.base import INTERNAL, open_transport


def main(argv=None) -> int:
    log = setup_logging("store")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    stop = stop_event()
    init_db(config.db_path)
    transport = open_transport(config)
    consumer = transport.consumer("store", topics=INTERNAL, sensors=True)
    pruner = None
    if hasattr(transport, "prune"):
        # The embedded log only needs to keep what detectors may re-read to rebuild windows.
        def prune_loop():
            while not stop.wait(60):
                n = transport.prune(config.store.bus_retention_s)
                if n:
                    log.info("pruned %d old messages from the bus", n)
        pruner = threading.Thread(target=prune_loop, daemon=True, name="prune")
        pruner.start()
    log.info("writing %s", config.db_path)
    try:
        n = run_store(config.db_path, consumer, stop, config.store.flush_interval, config.store.max_batch)
        log.info("stopped after storing %d messages", n)
    finally:
        consumer.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
