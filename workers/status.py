"""What a running Vigie is doing, in the terminal: `python -m workers.status` (`make status`).

Each program's state from supervisord (RUNNING, STARTING, BACKOFF, FATAL, ...) and each board's
from its producer's status file: the same facts as the page's health, for when the page itself
does not answer. Exit code 1 when the system is not running.
"""

from __future__ import annotations

import sys
import time
import xmlrpc.client

from lib.config import ConfigError, load_config
from lib.ingest.status import STOPPED, read_statuses
from lib.runtime import setup_logging
from lib.supervision import rpc


def _ago(t: float | None) -> str:
    return "never" if not t else f"{time.time() - t:.0f} s ago"


def main(argv=None) -> int:
    log = setup_logging("status")
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2
    try:
        programs = rpc(config.data_dir).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error) as exc:
        print(f"Vigie is not running on {config.data_dir} (no answer from supervisord: {exc})")
        programs = None
    else:
        print("programs:")
        for p in programs:
            print(f"  {p['name']:<22} {p['statename']:<9} {p['description']}")
    print("boards:")
    for s in read_statuses(config.run_dir):
        state = s.state if s.alive or s.state == STOPPED else f"{s.state} (its producer is gone)"
        detail = f" - {s.detail}" if s.detail else ""
        print(
            f"  {s.name:<22} {state}{detail}\n  {'':<22} port {s.port}, {s.lines_read} lines,"
            f" last {_ago(s.last_line_at)}, in this state since {_ago(s.since)}"
        )
    return 0 if programs is not None else 1


if __name__ == "__main__":
    sys.exit(main())
