"""The store: `python -m workers.store`. The only process that writes the DuckDB file."""

from __future__ import annotations

import argparse
import os
import sys
import threading

# The named reads the store's socket answers: the page's queries and the detectors' open events.
import lib.page.queries  # noqa: F401
import lib.store.named  # noqa: F401
from lib.config import ConfigError, load_config
from lib.messages import INTERNAL
from lib.runtime import setup_logging, stop_event
from lib.store.files import DatabaseFileError
from lib.store.retention import Retention
from lib.store.schema import open_checked
from lib.store.sink import run_store
from lib.store.status import StoreStatus
from lib.supervision import die_with_supervisor
from lib.transport import open_transport

# A foreign or damaged database file: supervisord is told (exitcodes) not to restart the store
# in a loop; the operator reads the one clear line in the log and moves the file.
EXIT_BAD_DATABASE = 3


def main(argv=None) -> int:
    log = setup_logging("store")
    die_with_supervisor()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    # Everything the store creates (the database, its WAL, exports) is for this user only.
    os.umask(0o077)
    stop = stop_event()
    try:
        open_checked(config.db_path)
    except DatabaseFileError as exc:
        log.error("%s", exc)
        return EXIT_BAD_DATABASE
    transport = open_transport(config)
    consumer = transport.consumer("store", topics=INTERNAL, sensors=True)

    # The transport only needs to keep what detectors may re-read to rebuild windows (a Kafka
    # broker keeps its own retention: pruning there does nothing).
    def prune_loop():
        while not stop.wait(60):
            n = transport.prune(config.store.bus_retention_s)
            if n:
                log.info("pruned %d old messages from the bus", n)

    threading.Thread(target=prune_loop, daemon=True, name="prune").start()
    log.info("writing %s", config.db_path)
    try:
        retention = Retention(
            config.db_path,
            config.store.retention_days,
            config.data_dir / "export",
            config.store.retention_export,
            config.store.retention_check_s,
        )
        n = run_store(
            config.db_path,
            consumer,
            stop,
            config.store.flush_interval,
            config.store.max_batch,
            on_flush=StoreStatus(config.run_dir).wrote,
            maintenance=retention,
            quiet_flush_interval=config.store.quiet_flush_interval,
        )
        log.info("stopped after storing %d messages", n)
    except DatabaseFileError as exc:
        log.error("%s", exc)
        return EXIT_BAD_DATABASE
    finally:
        consumer.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
