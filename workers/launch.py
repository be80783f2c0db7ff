"""Start the whole system: `python -m workers.launch` (what `make run` does).

Checks the configuration first, so a bad key is one clear line instead of five crash-looping
programs, then runs supervisord in the foreground with the data folder in its environment.
Ctrl-C stops everything cleanly: launch asks supervisord to shut down over its control socket,
and supervisord stops each program in turn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import xmlrpc.client

from lib.alerts.settings import AlertsConfigError, load_alerts
from lib.config import PROJECT_ROOT, ConfigError, load_config
from lib.detect.detection import check_detection_config
from lib.ingest.boards import boards, program_sections
from lib.ingest.status import PREFIX, SUFFIX
from lib.runtime import setup_logging
from lib.supervision import die_with_parent, rpc, running_programs


def main(argv=None) -> int:
    log = setup_logging("launch")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--check-stopped",
        action="store_true",
        help="only check that no Vigie program runs on the data folder (exit 1 if one does)",
    )
    args = ap.parse_args(argv)
    try:
        config = load_config()
        check_detection_config(config)
        board_list = boards(config)
        load_alerts(config)
    except (ConfigError, AlertsConfigError) as exc:
        log.error("configuration: %s", exc)
        return 2
    data = config.data_dir
    running = running_programs(data)
    if running:
        # A second system on the same folder would fight the first for the serial port, the
        # database file and the page's port (and programs orphaned by a killed supervisord
        # would outlive the new one's Ctrl-C).
        log.error(
            "Vigie already runs on %s: %s. Stop it first (Ctrl-C in its terminal, or `kill %s`), then start again.",
            data,
            ", ".join(f"{n} (pid {p})" for n, p in running),
            " ".join(str(p) for _, p in running),
        )
        return 1
    if args.check_stopped:
        return 0
    (data / "logs").mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    # One producer (and simulator) program per board, from [serial] port: supervisord.conf
    # includes this file. A previous run's status files would show boards no longer read.
    config.run_dir.mkdir(exist_ok=True)
    for old in config.run_dir.glob(f"{PREFIX}*{SUFFIX}"):
        old.unlink()
    (config.run_dir / "boards.conf").write_text(program_sections(board_list, sys.executable))
    env = dict(os.environ, VIGIE_DATA_DIR=str(data), VIGIE_PATHS_DATA_DIR=str(data))
    supervisord = shutil.which("supervisord", path=str(PROJECT_ROOT / ".venv" / "bin")) or shutil.which("supervisord")
    if not supervisord:
        log.error("supervisord not found: run `make run` (it installs the requirements)")
        return 2
    print(
        f"\n  Vigie operator page: http://{config.app.address}:{config.app.port}\n"
        f"  data: {data}   transport: {config.transport.kind}\n"
        f"  boards: {', '.join(b.name if b.name == b.entry else f'{b.name} ({b.entry})' for b in board_list)}\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )
    # Kafka mode runs several detector workers in one group (supervisord-kafka.conf, docs/kafka.md).
    conf = "supervisord-kafka.conf" if config.transport.kind == "kafka" else "supervisord.conf"
    # --user: the user running launch, said outright; as root, supervisord otherwise logs a CRIT
    # line at every start asking whether root was meant.
    args = [supervisord, "-n", "-c", str(PROJECT_ROOT / conf), "--user", str(os.getuid())]
    return supervise(subprocess.Popen(args, env=env, preexec_fn=_supervisord_child), data, log)


def _supervisord_child() -> None:
    # Its own process group: Ctrl-C in the terminal reaches launch only, which asks supervisord to
    # shut down over its socket (a signal makes supervisord log a WARN line at every normal stop).
    # Tied to launch: if launch is killed, supervisord gets SIGTERM and stops every program.
    os.setpgrp()
    die_with_parent(signal.SIGTERM)


def supervise(proc: subprocess.Popen, data, log) -> int:
    """Wait for supervisord; on SIGINT or SIGTERM ask it to shut down. Returns its exit code."""
    asked: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: asked.append(signum))
    stopping = False
    while True:
        try:
            return proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
        if asked and not stopping:
            stopping = True
            try:
                rpc(data).supervisor.shutdown()
            except (OSError, xmlrpc.client.Error) as exc:
                # Not listening yet (a Ctrl-C in its first second) or stuck: the signal still works.
                log.info("supervisord did not take the shutdown request (%s): signalling it", exc)
                proc.send_signal(signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
