"""Reads through the store: the page's queries run in the process that writes.

DuckDB lets one process open a file for writing, and while it does no other process can open it,
not even to read. Taking turns (the store opening the file for each write and closing it, readers
opening it read-only in between) made every refresh of the page stop ingestion for as long as its
queries ran: at 20,000 readings/s with the Live view open, the store fell behind. Inside
one process DuckDB runs reads beside writes (MVCC), so the store keeps the file open for its whole
run and answers queries sent to a Unix socket next to the database file, each on its own cursor,
while it goes on writing.

`lib.store.reader.read_db` hands callers a `RemoteConnection` when the store answers on the socket, and
opens the file read-only when no store runs (tests, tools, a stopped system). Both offer what the
read side uses: `execute(sql, params)` and then `.df()`, `.fetchall()` or `.fetchone()`.

Requests and answers are pickles on a socket only this user can open (0600, in the data folder):
the peer is the same user, who can read and write the database file anyway.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import socket
import socketserver
import struct
import threading
from pathlib import Path

import duckdb

_LEN = struct.Struct("!Q")
METHODS = ("df", "fetchall", "fetchone")


def socket_path(db_path: os.PathLike) -> Path:
    """Where the store answers for `db_path`: beside it, or under /tmp when that path is too long
    for a Unix socket (108 bytes)."""
    db_path = Path(db_path).resolve()
    beside = db_path.with_name(db_path.name + ".sock")
    if len(str(beside)) < 100:
        return beside
    return Path("/tmp") / f"vigie-{hashlib.sha1(str(db_path).encode()).hexdigest()[:16]}.sock"


def _send(sock: socket.socket, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv(sock: socket.socket):
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    return pickle.loads(_recv_exact(sock, _LEN.unpack(head)[0]) or b"")


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class ReadServer:
    """Answers queries on `connection()`'s database (called per query: the writer may have
    reconnected after a write error) from a thread per client."""

    def __init__(self, connection, db_path: os.PathLike):
        self.path = socket_path(db_path)
        self._connection = connection
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    try:
                        request = _recv(self.request)
                    except (OSError, EOFError, pickle.UnpicklingError):
                        return
                    if request is None:
                        return
                    _send(self.request, server.answer(*request))

        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()   # left by a store that was killed
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self._server.daemon_threads = True
        os.chmod(self.path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="reads", daemon=True)

    def start(self) -> "ReadServer":
        self._thread.start()
        return self

    def answer(self, sql: str, params, method: str):
        if method not in METHODS:
            return ("error", "Error", f"unknown fetch method {method!r}")
        try:
            cursor = self._connection().cursor()
        except duckdb.Error as exc:
            return ("error", type(exc).__name__, str(exc))
        try:
            return ("ok", getattr(cursor.execute(sql, params), method)())
        except duckdb.Error as exc:
            return ("error", type(exc).__name__, str(exc))
        except Exception as exc:  # a bad parameter: the reader gets the message, the store goes on
            return ("error", "Error", f"{type(exc).__name__}: {exc}")
        finally:
            cursor.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class RemoteResult:
    def __init__(self, conn: "RemoteConnection", sql: str, params):
        self._conn, self._sql, self._params = conn, sql, params

    def df(self):
        return self._conn.ask(self._sql, self._params, "df")

    def fetchall(self):
        return self._conn.ask(self._sql, self._params, "fetchall")

    def fetchone(self):
        return self._conn.ask(self._sql, self._params, "fetchone")


class RemoteConnection:
    """A read connection to the store's database through its socket (see the module docstring)."""

    def __init__(self, path: os.PathLike, timeout: float = 60.0):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError:
            self._sock.close()
            raise

    def execute(self, sql: str, params=None) -> RemoteResult:
        return RemoteResult(self, sql, list(params) if params is not None else None)

    def ask(self, sql: str, params, method: str):
        _send(self._sock, (sql, params, method))
        answer = _recv(self._sock)
        if answer is None:
            raise duckdb.ConnectionException("the store closed the connection")
        if answer[0] == "ok":
            return answer[1]
        _, kind, message = answer
        raise getattr(duckdb, kind, duckdb.Error)(message)

    def close(self) -> None:
        self._sock.close()
