"""A detector worker: `python -m workers.detector`. Judges every reading with the configured
detectors and hands the states to the store through the transport."""

from __future__ import annotations

import argparse
import sys

from lib.config import ConfigError, load_config
from lib.detect.detection import Judge, check_detection_config, run_detector
from lib.detect.events import EventBook
from lib.runtime import setup_logging, stop_event
from lib.supervision import die_with_supervisor
from lib.transport import open_transport


def open_events_from_store(config, log):
    """`restore` for lib.detect.events.EventBook: the events the store holds as still open, so an
    event open across a restart (or handed over by another worker) stays one event. Without the
    store (not started yet, a file of an older version) the worker judges on and says so."""
    import duckdb

    from lib.detect.events import open_events
    from lib.store.reader import read_db

    def restore(sensors):
        if not config.db_path.exists():
            return []
        try:
            with read_db(config.db_path, wait_s=30) as conn:
                found = open_events(conn, sensors)
        except duckdb.CatalogException:
            return []  # a file the store is creating right now: no event yet
        except (duckdb.Error, OSError) as exc:
            log.warning(
                "cannot read the open events from the store (%s): an event open before this start "
                "will be told again as a new one",
                exc,
            )
            return []
        if found:
            log.info("carrying on %d open event(s): %s", len(found), ", ".join(e.id for e in found[:5]))
        return found

    return restore


def rejections_from_store(config, log):
    """`feedback` for run_detector: the operator's rejected flags from the store's labels (None
    when they cannot be read now: the thresholds stay as they are until the next try)."""
    import duckdb

    from lib.detect.feedback import rejected_floors
    from lib.store.reader import read_db

    def feedback():
        if not config.db_path.exists():
            return None
        try:
            with read_db(config.db_path, wait_s=5) as conn:
                return rejected_floors(conn)
        except duckdb.CatalogException:
            return None  # a file the store is creating right now
        except (duckdb.Error, OSError) as exc:
            log.warning("cannot read the operator's labels from the store (%s); trying again shortly", exc)
            return None

    return feedback


def main(argv=None) -> int:
    log = setup_logging("detector")
    die_with_supervisor()
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
        judge = Judge(config, EventBook(config, open_events_from_store(config, log)))
        n = run_detector(judge, consumer, stop, feedback=rejections_from_store(config, log))
        log.info("stopped after judging %d readings", n)
    finally:
        consumer.close()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
