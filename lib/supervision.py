"""Talking to the supervisord of a running Vigie, through its control socket in the data folder.

`rpc(data_dir)` is supervisord's XML-RPC interface over that socket, with supervisor's own client
transport: `rpc(data).supervisor.getAllProcessInfo()` gives every program's state as
`supervisorctl status` does (`statename`: RUNNING, STARTING, BACKOFF, FATAL, ...), and
`rpc(data).supervisor.shutdown()` stops the system as Ctrl-C does.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import xmlrpc.client
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "supervisor.sock"
# The socket's file mode (0700, in a 0700 data folder) is what keeps other users out. supervisord
# logs a CRIT line at every start for a socket without a username, so supervisord.conf sets this
# pair in [unix_http_server] and [supervisorctl]; it is not a secret.
USERNAME, PASSWORD = "vigie", "vigie"
PR_SET_PDEATHSIG = 1


def rpc(data_dir: str | os.PathLike) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport
    transport = SupervisorTransport(USERNAME, PASSWORD, f"unix://{Path(data_dir) / SOCKET_NAME}")
    # The host is a placeholder: the transport connects to the socket.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux; elsewhere a
    no-op logged once). For a child between fork and exec (`preexec_fn`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            log.info("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.info("no prctl here (%s): supervisord will not stop by itself if launch is killed", exc)
