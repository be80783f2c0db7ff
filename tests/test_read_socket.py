"""The store's read socket: named queries only, no pickle, a private folder, same user only.

The attacks are what an outside test did to the socket it found: a second process sending SQL (a
`COPY` to a file, a `DROP TABLE`, a read of another file), a pickle, and another user who created
the socket's place first. The store answers from its own writer connection, as it does in
`workers/store.py`, on a real DuckDB file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import lib.store.named  # noqa: F401  (registers the detectors' named reads, as the store worker does)
from lib.detect.events import open_events
from lib.page import queries
from lib.page.queries import NAMED, Filters
from lib.store.reader import read_db
from lib.store.readserver import ReadServer, RemoteConnection, SocketFolderError, socket_dir, socket_path
from lib.store.writer import Writer
from tests.appdata import prepare

NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A folder every user can reach (tmp_path's parents are root's only): /tmp/vigie-test-*."""
    path = Path(tempfile.mkdtemp(prefix="vigie-test-", dir="/tmp"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(shared_dir):
    """A prepared database held by a Writer and served as the store serves it."""
    db = shared_dir / "data" / "vigie.duckdb"
    db.parent.mkdir(mode=0o700)
    info = prepare(db)
    writer = Writer(db)
    server = ReadServer(writer.connection, db, NAMED).start()
    try:
        yield db, info, writer
    finally:
        server.close()
        writer.close()


def test_the_page_queries_answer_the_same_through_the_socket(tmp_path):
    db = tmp_path / "v.duckdb"
    info = prepare(db)
    now = queries.utc_now()
    f = Filters(sessions=tuple(info["sessions"])[-1:], start=now - timedelta(days=2))
    calls = [
        ("sessions",),
        ("sensor_names",),
        ("detectors",),
        ("time_bounds", f),
        ("totals",),
        ("anomalies", f, 50),
        ("per_detector", f),
        ("pair_counts", f),
        ("truth_available", f),
        ("scores_vs_truth", f),
        ("live_fetch", (), now - timedelta(minutes=5), now),
        # the page's long spans, from the rollups and flags; the Overview; breaks; health
        ("live_fetch", ("humidite", "pression"), now - timedelta(days=30), now, 12, ("pression",), ()),
        ("charts_fetch", ("humidite",), now - timedelta(days=3), now),
        ("anomaly_strips", now - timedelta(days=7), 84 * 60, 120, ("temperature",)),
        ("gaps", now - timedelta(days=7), now),
        ("health", now),
        ("detector_lag", now),
    ]
    with read_db(db) as local:
        want = [getattr(queries, name)(local, *args) for name, *args in calls]
    writer = Writer(db)
    server = ReadServer(writer.connection, db, NAMED).start()
    try:
        with read_db(db) as remote:
            assert isinstance(remote, RemoteConnection)
            got = [getattr(queries, name)(remote, *args) for name, *args in calls]
    finally:
        server.close()
        writer.close()
    for (name, *_), a, b in zip(calls, want, got):
        _assert_same(a, b, name)


def _assert_same(a, b, where):
    if isinstance(a, pd.DataFrame):  # same rows and types; some queries leave the row order open
        pd.testing.assert_frame_equal(
            a.sort_values(list(a.columns)).reset_index(drop=True),
            b.sort_values(list(b.columns)).reset_index(drop=True),
            obj=where,
        )
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k}]")
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), where
        for x, y in zip(a, b):
            _assert_same(x, y, where)
    else:
        assert a == b, where


CLIENT = r"""
import json, os, pickle, socket, struct, sys
path, kind = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
def frame(obj):
    head = json.dumps(obj).encode()
    return struct.pack("!I", 1) + struct.pack("!Q", len(head)) + head
try:
    if kind == "pickle":   # the old protocol: (sql, params, method) pickled
        data = pickle.dumps(("DROP TABLE labels", None, "fetchall"))
        s.sendall(struct.pack("!Q", len(data)) + data)
    else:
        s.sendall(frame({"query": sys.argv[3], "args": json.loads(sys.argv[4]), "kwargs": {}}))
except (BrokenPipeError, ConnectionResetError):
    pass
chunks = []
while True:
    try:
        c = s.recv(65536)
    except ConnectionResetError:
        c = b""
    if not c:
        break
    chunks.append(c)
    if kind != "pickle":
        raw = b"".join(chunks)
        if len(raw) >= 12:
            n = struct.unpack("!Q", raw[4:12])[0]
            if len(raw) >= 12 + n:
                print(raw[12:12 + n].decode())
                break
print("closed" if not chunks else "", end="")
"""


@pytest.mark.parametrize(
    "attempt",
    [
        ("sql", "COPY (SELECT * FROM readings) TO '{out}'", []),
        ("sql", "DROP TABLE labels", []),
        ("name", "__import__", ["os"]),
        ("name", "execute", ["SELECT * FROM read_csv('/etc/hostname')"]),
        ("pickle", "", []),
    ],
)
def test_a_second_process_cannot_send_sql_or_pickles(served, tmp_path, attempt):
    """A client of the same user sends SQL, a name that is not a query, or the old pickled request:
    nothing runs, no file is written, no table goes, and the store keeps answering."""
    db, _, writer = served
    kind, query, args = attempt
    out = tmp_path / "stolen.csv"
    argv = [sys.executable, "-c", CLIENT, f"/proc/self/cwd/{socket_path(db).name}"]
    if kind == "pickle":
        argv += ["pickle"]
    else:
        argv += ["frame", query.format(out=out), json.dumps(args)]
    answer = subprocess.run(argv, cwd=socket_dir(db), capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    if kind == "pickle":
        assert answer.stdout == "closed"  # not understood: the connection is dropped
    else:
        reply = json.loads(answer.stdout)
        assert "ok" not in reply and "named read queries" in reply["message"], reply
    assert not out.exists()
    tables = {r[0] for r in writer.connection().execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"labels", "readings", "states"} <= tables
    # and the store still answers its own queries
    with read_db(db) as conn:
        assert queries.totals(conn)["readings"] > 0


def test_sql_through_a_remote_connection_is_refused_with_a_clear_error(served):
    db, _, _ = served
    with read_db(db) as conn, pytest.raises(duckdb.PermissionException, match="named queries only"):
        conn.execute("SELECT count(*) FROM readings")


def test_external_files_are_off_even_for_the_store_itself(served):
    db, _, writer = served
    with pytest.raises(duckdb.PermissionException):
        writer.connection().execute("SELECT * FROM read_csv('/etc/hostname')").fetchall()


def _as_nobody(code: str, *args: str) -> subprocess.CompletedProcess:
    def demote():
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    # The system's Python: the project's virtualenv may sit in a folder that user cannot enter.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(
        [python, "-c", code, *args], preexec_fn=demote, capture_output=True, text=True, timeout=30, cwd="/"
    )


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second user is simulated with setuid, which needs root")


@needs_root
def test_a_client_of_another_user_is_refused(served, caplog):
    """Even with the folder opened up (it is 0700), the store answers only its own user."""
    db, _, _ = served
    folder = socket_dir(db)
    os.chmod(folder.parent, 0o755)
    os.chmod(folder, 0o755)
    os.chmod(socket_path(db), 0o777)
    code = CLIENT.replace('print("closed"', 'print("refused"')
    out = _as_nobody(code, str(socket_path(db)), "frame", "totals", "[]")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "refused", out.stdout  # closed without an answer
    assert f"refused a client of uid {NOBODY}" in caplog.text


@needs_root
def test_another_user_creating_the_socket_folder_first_gets_nothing(shared_dir):
    """The database in a shared (world-writable, sticky) folder: another user creates the socket's
    folder first and listens in it. The store refuses the folder with a clear message instead of
    crashing on it or serving there, and a reader never talks to the impostor."""
    db = shared_dir / "vigie.duckdb"
    prepare(db)
    impostor = _as_nobody(f"""
import os, socket, time
os.mkdir({str(socket_dir(db))!r}, 0o777)
os.chmod({str(socket_dir(db))!r}, 0o777)
s = socket.socket(socket.AF_UNIX); s.bind({str(socket_path(db))!r}); os.chmod({str(socket_path(db))!r}, 0o777)
print("ready", flush=True)
""")
    assert impostor.stdout.strip() == "ready", impostor.stderr
    writer = Writer(db)
    try:
        with pytest.raises(SocketFolderError, match="not a private 0700"):
            ReadServer(writer.connection, db, NAMED)
    finally:
        writer.close()
    with pytest.raises(SocketFolderError, match="not a private 0700"):
        RemoteConnection(db)


def test_a_long_database_path_keeps_the_socket_beside_it(tmp_path):
    """Past a Unix socket address's 108 bytes the socket used to move to /tmp under a predictable
    name; now it stays in the private folder beside the database, reached through /proc."""
    deep = tmp_path / ("d" * 100) / ("e" * 60)
    deep.mkdir(parents=True)
    db = deep / "vigie.duckdb"
    prepare(db, per_sensor=200, hostile=False)
    with read_db(db) as local:
        want = queries.totals(local)["readings"]
    writer = Writer(db)
    server = ReadServer(writer.connection, db, NAMED).start()
    try:
        assert len(str(socket_path(db))) > 108 and socket_path(db).is_socket()
        assert (socket_dir(db).stat().st_mode & 0o777) == 0o700
        with read_db(db) as conn:
            assert isinstance(conn, RemoteConnection) and queries.totals(conn)["readings"] == want > 0
    finally:
        server.close()
        writer.close()
    assert not any(Path("/tmp").glob("vigie-*.sock"))


def test_the_database_file_is_created_for_its_owner_only(tmp_path):
    db = tmp_path / "open" / "vigie.duckdb"
    db.parent.mkdir(mode=0o755)
    writer = Writer(db)
    writer.connection().execute("SELECT 1")
    writer.close()
    assert (db.stat().st_mode & 0o777) == 0o600


def test_a_restarted_detector_reads_the_open_events_through_the_socket(served):
    """The detector worker asks a running store for the events still open (a named read too)."""
    db, _, writer = served
    with read_db(db) as conn:
        assert isinstance(conn, RemoteConnection)
        assert open_events(conn) == open_events(writer.connection().cursor()) == []
