"""The serial producer: board lines in, stamped readings and rejects out to the transport.

One run is one session. Every line gets the session's next sequence number, good or bad, so that
readings sharing a receive time keep their order and replays are recognised downstream. A
malformed line becomes a reject with its reason; an unplugged board becomes a gap in the session
and a reconnect loop with backoff; nothing stops the producer but a stop signal.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import serial

from lib.ingest import protocol
from lib.ingest.gate import SensorGate
from lib.ingest.serial_port import LineSplitter, PortError, describe_holders, open_port, port_holders
from lib.ingest.status import BUFFERING, CONNECTED, FAILED, PORT_BUSY, RECONNECTING, WAITING, StatusWriter
from lib.messages import Reject, SessionEnd, SessionEvent, SessionGap, SessionStart, reading_message
from lib.transport.base import Producer

log = logging.getLogger(__name__)

# Lines are made durable (flushed to the transport) as soon as the port has nothing more waiting,
# and at least this often under a steady stream: what a kill -9 can lose is what was read since.
FLUSH_INTERVAL_S = 0.05
# With acknowledgements a kill -9 loses nothing read, but stores twice what was committed and not
# yet acknowledged: the few milliseconds of a commit's fsync. Flushing less often makes that a
# smaller share of the time (3 ms in 200 ms), at no risk of loss.
ACK_FLUSH_INTERVAL_S = 0.2
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 2.0
# How often an open port is checked for another reader (TIOCEXCL does not stop root's opens).
HOLDER_CHECK_S = 10.0
# A port away for less than this is routine, not for the operator: the simulator starting, the
# simulator stopping first at Ctrl-C, a board resetting. Longer, and the log says so as a warning.
WARN_AFTER_S = 10.0
# A flush the transport refused (its log's disk full, an I/O error) is retried this often, while
# the port goes on being read and lines wait in memory (at most `max_held` of them).
FLUSH_RETRY_START_S, FLUSH_RETRY_MAX_S = 0.2, 5.0
# What a refused flush raises: the embedded log and Kafka's spool are SQLite files.
TRANSPORT_WRITE_ERRORS = (sqlite3.Error, OSError)


def write_error_cause(exc: BaseException) -> str:
    """What a refused flush means, by SQLite's result code or the system's error number."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return {
            sqlite3.SQLITE_FULL: "disk full",
            sqlite3.SQLITE_IOERR: "I/O error",
            sqlite3.SQLITE_READONLY: "read-only",
            sqlite3.SQLITE_CANTOPEN: "cannot open",
        }.get(code & 0xFF, "write failed")
    return {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk full",
        errno.EIO: "I/O error",
        errno.EROFS: "read-only",
        errno.EACCES: "permission denied",
    }.get(getattr(exc, "errno", None), "write failed")


def new_session_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def now_us() -> int:
    return time.time_ns() // 1000


class SerialProducer:
    """`find_port`, when given, is asked for the device before each open (`--port auto`: no board
    yet, or a replugged board back under another name). With `ack`, each flush is acknowledged
    back on the port (`ACK <bytes of complete lines read since open> LF`): the simulated board then
    resends whatever a producer killed with -9 had read but not stored. Off for real boards.
    `status`, when given, is kept up to date for the page (lib.ingest.status)."""

    def __init__(
        self,
        out: Producer,
        port: str,
        baud: int,
        timeout: float = 0.5,
        max_line: int = protocol.MAX_LINE,
        session_id: str | None = None,
        find_port: Callable[[], str] | None = None,
        ack: bool = False,
        status: StatusWriter | None = None,
        max_held: int = 200_000,
        gate: SensorGate | None = None,
    ):
        self.out, self.port, self.baud, self.timeout, self.max_line = out, port, baud, timeout, max_line
        self.find_port = find_port
        self.ack = ack
        self.status = status
        self.session = session_id or new_session_id()
        if status is not None:
            status.set(port=port, session=self.session)
        self.seq = 0
        self.counts = {"readings": 0, "rejects": 0, "gaps": 0, "dropped": 0}
        self._last_flush = time.monotonic()
        # Lines handed to the transport since its last good flush; while it refuses to write,
        # they are all in memory, so they are bounded.
        self.max_held, self._held = max_held, 0
        # Which names become sensors (lib.ingest.gate); the worker passes [serial]'s. By default
        # every valid name at once, as a library caller expects.
        self.gate = gate or SensorGate(confirm_lines=1)
        self._chunk_start = 0  # bytes of the port's stream before the lines being handled
        self._ack_cap: int | None = None  # while lines are held: acknowledge no further than this
        self._failing: dict | None = None  # while flushes fail: since, cause, next retry, backoff

    # -- what goes out ------------------------------------------------------------------
    def _send(self, message) -> None:
        if self._held >= self.max_held:
            self.counts["dropped"] += 1
            if self.counts["dropped"] == 1:
                log.error(
                    "%d lines held in memory while the transport cannot write: further lines are DROPPED "
                    "until it can (raise [serial] max_held_lines for longer outages)",
                    self._held,
                )
            return
        self.out.send([message])
        self._held += 1

    def _event(self, event: SessionEvent) -> None:
        self._send(event.message())

    def handle_line(self, line: bytes, ts_us: int, too_long: bool = False, partial: bool = False) -> None:
        """Stamp and hand on one line (without its `\\n`)."""
        if not line.strip(b"\r \t") and not partial:
            return  # blank lines carry nothing; boards print them at reset
        self.seq += 1
        if partial:
            parsed = protocol.Rejected(protocol.PARTIAL_LINE, protocol.escape_raw(line))
        elif too_long:
            parsed = protocol.Rejected(protocol.TOO_LONG, protocol.escape_raw(line[: self.max_line]) + "...")
        else:
            parsed = protocol.parse_line(line, self.max_line)
        if isinstance(parsed, protocol.Parsed):
            was_holding = self.gate.holding
            reason, items = self.gate.admit(parsed.sensor, (parsed.sensor, parsed.value, self.seq, ts_us, line))
            for item in items:
                self._reading(item) if reason is None else self._reject(item[2], item[3], reason, item[4])
            self._expire_held()
            if not self.gate.holding:
                self._ack_cap = None
            elif not was_holding:
                # Held lines are not on the transport yet: the board must not be told they are.
                self._ack_cap = self._chunk_start
        else:
            self._reject(self.seq, ts_us, parsed.reason, raw=parsed.raw)

    def _reading(self, item: tuple) -> None:
        sensor, value, seq, ts_us, _ = item
        self.counts["readings"] += 1
        self._send(reading_message(sensor, repr(value), self.session, seq, ts_us))

    def _reject(self, seq: int, ts_us: int, reason: str, line: bytes = b"", raw: str | None = None) -> None:
        self.counts["rejects"] += 1
        raw = protocol.escape_raw(line.rstrip(b"\r\n")) if raw is None else raw
        log.debug("rejected line %d (%s): %s", seq, reason, raw)
        self._send(Reject(self.session, seq, ts_us, reason, raw).message())

    def _expire_held(self, everything: bool = False) -> None:
        """New names that did not send enough lines in time (all, at a stop): their lines become
        rejects, so a torn name leaves a trace but no sensor."""
        if not self.gate.holding:
            return
        for name, items in self.gate.expired(everything):
            log.info(
                "sensor name %r sent %d line(s) and no more: stored as %s rejects",
                name,
                len(items),
                protocol.UNCONFIRMED_SENSOR,
            )
            for item in items:
                self._reject(item[2], item[3], protocol.UNCONFIRMED_SENSOR, item[4])

    def maybe_flush(self, force: bool = False, interval: float = FLUSH_INTERVAL_S, retry_now: bool = False) -> bool:
        """Flush when forced or `interval` has passed; True when the lines are on the transport.
        A refused flush (a full disk under the transport's file) never stops the producer: the
        lines stay in memory, the port goes on being read, and the flush is retried with backoff
        (`retry_now` skips the wait: the last try at a stop)."""
        now = time.monotonic()
        if not (force or now - self._last_flush >= interval):
            return False
        failing = self._failing
        if failing is not None and now < failing["retry_at"] and not retry_now:
            return False
        try:
            self.out.flush()
        except TRANSPORT_WRITE_ERRORS as exc:
            self._flush_failed(exc, now)
            return False
        self._last_flush = now
        if failing is not None:
            self._failing = None
            log.warning(
                "the transport writes again after %.1fs: %d lines held in memory are stored%s",
                now - failing["since"],
                self._held,
                f"; {self.counts['dropped']} were dropped when the memory bound was reached"
                if self.counts["dropped"]
                else "",
            )
            self._held = 0
            self._set_status(CONNECTED, "")
        self._held = 0
        return True

    def _flush_failed(self, exc: BaseException, now: float) -> None:
        failing = self._failing
        if failing is None:
            cause = write_error_cause(exc)
            self._failing = failing = {"since": now, "cause": cause, "backoff": FLUSH_RETRY_START_S}
            log.error(
                "%s: cannot write to the transport (%s); reading the port on, holding lines in memory (at "
                "most %d) and retrying every %.1f-%.0fs",
                cause,
                exc,
                self.max_held,
                FLUSH_RETRY_START_S,
                FLUSH_RETRY_MAX_S,
            )
            self._held_status()
        else:
            log.debug("transport still refuses (%s); %d lines held", exc, self._held)
            self._held_status()
            failing["backoff"] = min(failing["backoff"] * 2, FLUSH_RETRY_MAX_S)
        failing["retry_at"] = now + failing["backoff"]

    def run(self, stop: threading.Event) -> None:
        """Read until `stop`. Raises PortError only for a lasting problem (permission denied, bad
        settings) on the first open; an absent or vanished port is waited for."""
        log.info("session %s: port %s at %d baud", self.session, self.port, self.baud)
        self._event(
            SessionStart(
                session=self.session,
                port=self.port,
                baud=self.baud,
                host=socket.gethostname(),
                ts_us=now_us(),
                pid=os.getpid(),
            )
        )
        self.maybe_flush(force=True)
        gap_start: int | None = None  # while the port is away, after a stream was read from it
        backoff = BACKOFF_START_S
        opened_once = warned = False  # warned: the log told the operator the port stays away
        away_since: float | None = None  # monotonic time the port became unavailable
        try:
            while not stop.is_set():
                try:
                    if self.find_port is not None:
                        # `--port auto`: which board, asked again before each open (a replugged
                        # board may come back under another name; none yet is waited for).
                        self.port = self.find_port()
                    port = open_port(self.port, self.baud, self.timeout)
                except PortError as exc:
                    if exc.lasting and not opened_once:
                        self._set_status(FAILED, str(exc))
                        raise
                    self._set_status(PORT_BUSY if exc.busy else RECONNECTING if opened_once else WAITING, str(exc))
                    now = time.monotonic()
                    if away_since is None:
                        away_since = now
                        log.info("%s; waiting for it (retrying every %.1f-%.1fs)", exc, BACKOFF_START_S, BACKOFF_MAX_S)
                    elif not warned and now - away_since >= WARN_AFTER_S:
                        log.warning("%s; still waiting after %.0f s", exc, now - away_since)
                        warned = True
                    else:
                        log.debug("still unavailable: %s", exc)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                if warned:
                    log.warning("port %s back after %.0f s", self.port, time.monotonic() - away_since)
                opened_once, warned, away_since = True, False, None
                backoff = BACKOFF_START_S
                self._set_status(CONNECTED, "")
                if gap_start is not None:
                    self._gap(gap_start, now_us(), "port lost")
                    gap_start = None
                try:
                    self._read(port, stop)
                except (serial.SerialException, OSError) as exc:
                    gap_start = now_us()
                    away_since = time.monotonic()
                    self._set_status(RECONNECTING, f"port lost: {exc}")
                    log.info("port %s lost (%s); reconnecting", self.port, exc)
                    # Open the gap now, so that the app shows it while the board is away.
                    self._event(SessionGap(session=self.session, start_us=gap_start, end_us=None, reason="port lost"))
                    self.maybe_flush(force=True)
                    # A device going away can still be opened for a moment: wait before the first try.
                    stop.wait(BACKOFF_START_S)
                finally:
                    port.close()
            if gap_start is not None:
                self._gap(gap_start, now_us(), "port unavailable at stop")
        finally:
            self._expire_held(everything=True)
            self._event(SessionEnd(session=self.session, ts_us=now_us()))
            if not self.maybe_flush(force=True, retry_now=True) and self._failing is not None:
                log.error("stopping while the transport cannot write: %d lines held in memory are LOST", self._held)
            log.info("session %s ended: %s", self.session, self.counts)
            if self.status is not None and self.status.state != FAILED:
                self.status.close()

    def _set_status(self, state: str, detail: str) -> None:
        if self.status is not None:
            if self._failing is not None and state == CONNECTED:
                self._held_status()  # reading the port, but holding what it reads
                return
            self.status.set(state, detail=detail, port=self.port)

    def _held_status(self) -> None:
        if self.status is not None and self._failing is not None:
            self.status.set(
                BUFFERING,
                detail=f"{self._failing['cause']}: {self._held} lines held in memory"
                + (f", {self.counts['dropped']} dropped" if self.counts["dropped"] else ""),
                buffered_lines=self._held,
                port=self.port,
            )

    def _acknowledge(self, port: serial.Serial, done: int) -> int:
        """Tell the board that `done` bytes are stored; 0 when the board did not take it."""
        try:
            port.write(b"\x06%d\n" % done)
        except serial.SerialTimeoutException:
            log.debug("acknowledgement of %d bytes not taken", done)
            return 0
        return done

    def _gap(self, start_us: int, end_us: int, reason: str) -> None:
        self.counts["gaps"] += 1
        self._event(SessionGap(session=self.session, start_us=start_us, end_us=end_us, reason=reason))
        self.maybe_flush(force=True)
        log.info("gap of %.1f s in session %s closed", (end_us - start_us) / 1e6, self.session)

    def _read(self, port: serial.Serial, stop: threading.Event) -> None:
        splitter = LineSplitter(self.max_line)
        read_total = acked = 0
        last_at = 0.0
        next_holder_check, intruders = time.monotonic() + HOLDER_CHECK_S, []
        if self.ack:
            # An acknowledgement the board is slow to take is skipped, never waited for.
            port.write_timeout = 0.05
        try:
            while not stop.is_set():
                # Read what is waiting in one call rather than byte by byte (pyserial's readline):
                # at thousands of lines per second the per-call cost is what limits throughput.
                data = port.read(max(1, port.in_waiting))
                if data:
                    waiting = port.in_waiting
                    if waiting:
                        data += port.read(waiting)
                    self._chunk_start = read_total - splitter.pending()
                    read_total += len(data)
                    ts = now_us()
                    for line, too_long in splitter.feed(data):
                        self.handle_line(line, ts, too_long=too_long)
                    last_at = ts / 1e6
                if self.status is not None:
                    self.status.lines(self.seq, last_at)
                if time.monotonic() >= next_holder_check:
                    next_holder_check = time.monotonic() + HOLDER_CHECK_S
                    others = port_holders(self.port)
                    if others and others != intruders:
                        log.warning(
                            "%s is also open in %s: a second reader takes lines from Vigie; close it",
                            self.port,
                            describe_holders(others),
                        )
                        self._set_status(PORT_BUSY, f"also open in {describe_holders(others)}")
                    elif intruders and not others:
                        self._set_status(CONNECTED, "")
                    intruders = others
                done = read_total - splitter.pending()
                if self._ack_cap is not None:
                    done = min(done, self._ack_cap)
                if not self.ack:
                    # Nothing more waiting: make what was read durable before blocking on the port,
                    # since what a kill -9 loses is what was read and not yet flushed.
                    self.maybe_flush(force=not port.in_waiting)
                    continue
                # With acknowledgements, flush at a steady pace, letting the port's buffer batch
                # the lines (see ACK_FLUSH_INTERVAL_S).
                if done > acked and not port.in_waiting:
                    stop.wait(max(0.0, ACK_FLUSH_INTERVAL_S - (time.monotonic() - self._last_flush)))
                if done > acked and self.maybe_flush(interval=ACK_FLUSH_INTERVAL_S):
                    acked = self._acknowledge(port, done) or acked
        finally:
            partial = splitter.take_partial()
            if partial.strip():
                self.handle_line(partial, now_us(), partial=True)
            self.maybe_flush(force=True)
