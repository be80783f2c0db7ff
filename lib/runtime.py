"""What every worker process shares: logging to the terminal and a stop flag set by SIGTERM/SIGINT.

A signal only sets the flag; each loop checks it, finishes its batch, flushes and returns, so
supervisord's graceful stop never kills a worker mid-write.
"""

from __future__ import annotations

import logging
import os
import signal
import threading


def setup_logging(name: str) -> logging.Logger:
    level = os.environ.get("VIGIE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(name)


def stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame):
        logging.getLogger(__name__).info("signal %s: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
