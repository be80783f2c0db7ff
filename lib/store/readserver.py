"""Reads through the store: the page's queries run in the process that writes.

DuckDB lets one process open a file for writing, and while it does no other process can open it,
not even to read. Taking turns (the store opening the file for each write and closing it, readers
opening it read-only in between) made every refresh of the page stop ingestion for as long as its
queries ran: at 20,000 readings/s with the Live view open, the store fell behind. Inside one
process DuckDB runs reads beside writes (MVCC), so the store keeps the file open for its whole run
and answers queries sent to a Unix socket, each on its own cursor, while it goes on writing.

What the socket accepts is a *named* read query and its parameters, nothing else: a name from the
registry the store was given (the page's functions in `lib.page.queries`), never SQL text. A
client of the same user could otherwise `COPY` files out, `ATTACH` others, forge or delete rows,
or drop a table the store needs. The store's connection also runs with DuckDB's external access
off (see `lib.store.files`), so even a query of ours cannot touch another file.

Where: `<database>.run/read.sock`, in a folder that must belong to this user and be 0700 (checked
by the store and by every reader, without following links). A socket in a shared folder such as
/tmp can be created first by another user, who then receives every reader's requests and answers
them. The folder is reached through `/proc/self/fd/<n>/`, so a long database path still fits in a
socket address (108 bytes). Both ends check the other's user id (`SO_PEERCRED`).

On the wire there is no pickle: a frame is a JSON part followed by binary parts, and each pandas
DataFrame in an answer travels as one Arrow IPC stream. Neither can run code when read.

`lib.store.reader.read_db` hands callers a `RemoteConnection` when the store answers, and opens
the file read-only when no store runs (tests, tools, a stopped system). Code that reads calls the
named functions (`lib.page.queries.totals(conn)` and so on): with a local connection they run SQL,
with a remote one they send their name (`named` in lib.page.queries).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

SOCKET_NAME = "read.sock"
_COUNT = struct.Struct("!I")
_LEN = struct.Struct("!Q")
# A request is a name and a few parameters; anything larger is not one of ours.
MAX_REQUEST_BYTES = 1 << 20
MAX_PARTS = 10_000

# Dataclasses that may travel as parameters (e.g. the page's Filters), by class name.
WIRE_TYPES: dict[str, type] = {}
# The queries the socket runs, by name: the functions marked `named` (lib.page.queries, the
# store's open events) in the modules this process imported.
NAMED: dict[str, Callable] = {}


def named(fn: Callable) -> Callable:
    """Mark a read query `fn(conn, *args)` as one the store answers by name. Called with a local
    DuckDB connection it runs its SQL; with a RemoteConnection it sends its name and parameters,
    and the store runs the same function on a cursor of its own."""
    if fn.__name__ in NAMED:
        raise ValueError(f"two read queries named {fn.__name__!r}")
    NAMED[fn.__name__] = fn

    @functools.wraps(fn)
    def run(conn, *args, **kwargs):
        if isinstance(conn, RemoteConnection):
            return conn.call(fn.__name__, *args, **kwargs)
        return fn(conn, *args, **kwargs)

    return run


def wire_type(cls: type) -> type:
    """Let instances of the dataclass `cls` travel as query parameters (field by field)."""
    WIRE_TYPES[cls.__name__] = cls
    return cls


class SocketFolderError(RuntimeError):
    """The socket's folder is not a private folder of this user: Vigie neither serves nor reads
    there. The message names the folder and what is wrong with it."""


def socket_dir(db_path: os.PathLike) -> Path:
    db_path = Path(db_path).resolve()
    return db_path.with_name(db_path.name + ".run")


def socket_path(db_path: os.PathLike) -> Path:
    """Where the store answers for `db_path` (reach it with `_short_path`, not this path)."""
    return socket_dir(db_path) / SOCKET_NAME


def _open_private_dir(path: Path, create: bool) -> int:
    """An open descriptor on `path`, a real folder owned by this user with no access for others."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if create or not isinstance(exc, FileNotFoundError):
            raise SocketFolderError(
                f"{path}: not a usable folder for the read socket ({exc}); remove whatever is there"
            ) from None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        raise SocketFolderError(
            f"{path} belongs to uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}, not a private 0700 "
            f"folder of uid {os.geteuid()}: Vigie will not serve or read its database through it. Remove it "
            "(or keep the database in a private folder)."
        )
    return fd


def _short_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}/{SOCKET_NAME}"


def peer_uid(sock: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return uid


# -- the wire: JSON with typed values; DataFrames as Arrow IPC parts ------------------------------


def _encode(value: Any, blobs: list[bytes]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return _encode(value.item(), blobs)
    if isinstance(value, pd.DataFrame):
        sink = pa.BufferOutputStream()
        table = pa.Table.from_pandas(value, preserve_index=None)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        blobs.append(sink.getvalue().to_pybytes())
        return {"$df": len(blobs) - 1}
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, blobs) for v in value]}
    if isinstance(value, list):
        return [_encode(v, blobs) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) and not k.startswith("$") for k in value):
        return {k: _encode(v, blobs) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {"$dict": [[_encode(k, blobs), _encode(v, blobs)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and WIRE_TYPES.get(type(value).__name__) is type(value):
        return {
            "$dc": type(value).__name__,
            "fields": {f.name: _encode(getattr(value, f.name), blobs) for f in dataclasses.fields(value)},
        }
    raise TypeError(f"a {type(value).__name__} cannot travel on the read socket")


def _decode(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_decode(v, blobs) for v in value]
    if not isinstance(value, dict):
        return value
    if "$df" in value:
        with pa.ipc.open_stream(blobs[value["$df"]]) as reader:
            return reader.read_all().to_pandas()
    if "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    if "$date" in value:
        return date.fromisoformat(value["$date"])
    if "$tuple" in value:
        return tuple(_decode(v, blobs) for v in value["$tuple"])
    if "$dict" in value:
        return {_decode(k, blobs): _decode(v, blobs) for k, v in value["$dict"]}
    if "$dc" in value:
        cls = WIRE_TYPES.get(value["$dc"])
        if cls is None:
            raise ValueError(f"unknown parameter type {value['$dc']!r}")
        return cls(**{k: _decode(v, blobs) for k, v in value["fields"].items()})
    if any(k.startswith("$") for k in value):
        raise ValueError(f"unknown value on the read socket: {sorted(value)[:3]}")
    return {k: _decode(v, blobs) for k, v in value.items()}


def _send(sock: socket.socket, obj: Any) -> None:
    blobs: list[bytes] = []
    head = json.dumps(_encode(obj, blobs)).encode()
    parts = [head, *blobs]
    sock.sendall(_COUNT.pack(len(parts)) + b"".join(_LEN.pack(len(p)) for p in parts))
    for p in parts:
        sock.sendall(p)


def _recv(sock: socket.socket, limit: int | None = None) -> Any:
    """The next frame's value; None at end of stream. Raises ValueError for a malformed frame."""
    head = _recv_exact(sock, _COUNT.size)
    if head is None:
        return None
    n = _COUNT.unpack(head)[0]
    if not 1 <= n <= MAX_PARTS:
        raise ValueError(f"bad frame ({n} parts)")
    sizes = []
    for _ in range(n):
        size = _recv_exact(sock, _LEN.size)
        if size is None:
            raise ValueError("frame cut short")
        sizes.append(_LEN.unpack(size)[0])
    if limit is not None and sum(sizes) > limit:
        raise ValueError(f"frame of {sum(sizes)} bytes, over {limit}")
    parts = []
    for size in sizes:
        data = _recv_exact(sock, size)
        if data is None:
            raise ValueError("frame cut short")
        parts.append(data)
    return _decode(json.loads(parts[0]), parts[1:])


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
    """Answers the named queries of `queries` ({name: function(cursor, *args)}) on
    `connection()`'s database (called per query: the writer may have reconnected after a write
    error), from a thread per client of this same user."""

    def __init__(
        self,
        connection: Callable[[], duckdb.DuckDBPyConnection],
        db_path: os.PathLike,
        queries: Mapping[str, Callable] | None = None,
    ):
        self.path = socket_path(db_path)
        self._connection = connection
        self.queries = NAMED if queries is None else dict(queries)
        self._started = False
        self._bind()

    def _bind(self) -> None:
        self._dir_fd = _open_private_dir(self.path.parent, create=True)
        server = self
        uid = os.geteuid()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    try:
                        request = _recv(self.request, MAX_REQUEST_BYTES)
                    except (OSError, ValueError) as exc:
                        log.warning("read socket: dropping a client that sent a malformed request (%s)", exc)
                        return
                    if request is None:
                        return
                    try:
                        _send(self.request, server.answer(request))
                    except OSError:
                        return

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

            def verify_request(self, request, client_address):
                other = peer_uid(request)
                if other != uid:
                    log.warning("read socket: refused a client of uid %d (only uid %d may read)", other, uid)
                    return False
                return True

        try:
            os.unlink(SOCKET_NAME, dir_fd=self._dir_fd)  # left by a store that was killed
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            self._server = Server(_short_path(self._dir_fd), Handler)
        finally:
            os.umask(old_umask)
        st = os.stat(SOCKET_NAME, dir_fd=self._dir_fd)
        self._identity = (st.st_dev, st.st_ino)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="reads", daemon=True
        )

    def start(self) -> "ReadServer":
        self._thread.start()
        self._started = True
        return self

    def check(self) -> bool:
        """Serve again if the socket was removed (its folder deleted with the database files, as
        `rm data/vigie.duckdb*` does): readers would otherwise find no store and a locked file.
        True when it had to."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                return False
        except FileNotFoundError:
            pass
        log.error("the read socket %s was removed: serving reads again there", self.path)
        self.close()
        self._bind()
        if self._started:
            self._thread.start()
        return True

    def answer(self, request: Any) -> dict:
        if not (
            isinstance(request, dict)
            and isinstance(request.get("query"), str)
            and isinstance(request.get("args", []), list)
            and isinstance(request.get("kwargs", {}), dict)
        ):
            return {"error": "Error", "message": "a request is {query: name, args: [...], kwargs: {...}}"}
        name = request["query"]
        fn = self.queries.get(name)
        if fn is None:
            return {
                "error": "PermissionException",
                "message": f"unknown query {name[:80]!r}: the store answers only its named read queries "
                "(lib.page.queries), never SQL",
            }
        try:
            cursor = self._connection().cursor()
        except duckdb.Error as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
        try:
            return {"ok": fn(cursor, *request.get("args", []), **request.get("kwargs", {}))}
        except duckdb.Error as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
        except (TypeError, ValueError, KeyError) as exc:  # bad parameters: the reader is told, the store goes on
            return {"error": "Error", "message": f"{name}: {type(exc).__name__}: {exc}"}
        finally:
            cursor.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        try:
            os.unlink(SOCKET_NAME, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        os.close(self._dir_fd)


class RemoteConnection:
    """A read connection to the store's database through its socket (see the module docstring):
    `call(name, *args)` runs one of the store's named queries."""

    def __init__(self, db_path: os.PathLike, timeout: float = 60.0):
        folder = socket_dir(db_path)
        fd = _open_private_dir(folder, create=False)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(_short_path(fd))
            other = peer_uid(self._sock)
            if other != os.geteuid():
                raise SocketFolderError(f"{folder / SOCKET_NAME} is served by uid {other}, not by this user's store")
        except BaseException:
            self._sock.close()
            raise
        finally:
            os.close(fd)

    def call(self, name: str, *args, **kwargs):
        _send(self._sock, {"query": name, "args": list(args), "kwargs": kwargs})
        try:
            answer = _recv(self._sock)
        except ValueError as exc:
            raise duckdb.ConnectionException(f"the store sent a malformed answer ({exc})") from None
        if answer is None:
            raise duckdb.ConnectionException("the store closed the connection")
        if "ok" in answer:
            return answer["ok"]
        kind = getattr(duckdb, str(answer.get("error")), None)
        if not (isinstance(kind, type) and issubclass(kind, duckdb.Error)):
            kind = duckdb.Error
        raise kind(answer.get("message", "error"))

    def execute(self, sql: str, params=None):
        raise duckdb.PermissionException(
            "the store's read socket answers named queries only (lib.page.queries), not SQL; "
            "stop the store to open the file yourself"
        )

    def close(self) -> None:
        self._sock.close()
