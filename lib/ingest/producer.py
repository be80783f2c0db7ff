"""The serial producer: board lines in, stamped readings and rejects out to the transport.

One run is one session. Every line gets the session's next sequence number, good or bad, so that
readings sharing a receive time keep their order and replays are recognised downstream. A
malformed line becomes a reject with its reason; an unplugged board becomes a gap in the session
and a reconnect loop with backoff; nothing stops the producer but a stop signal.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import serial

from lib.ingest import protocol
from lib.ingest.serial_port import LineSplitter, PortError, open_port
from lib.ingest.status import CONNECTED, FAILED, PORT_BUSY, RECONNECTING, WAITING, StatusWriter
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
# A port away for less than this is routine, not for the operator: the simulator starting, the
# simulator stopping first at Ctrl-C, a board resetting. Longer, and the log says so as a warning.
WARN_AFTER_S = 10.0


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

    def __init__(self, out: Producer, port: str, baud: int, timeout: float = 0.5,
                 max_line: int = protocol.MAX_LINE, session_id: str | None = None,
                 find_port: Callable[[], str] | None = None, ack: bool = False,
                 status: StatusWriter | None = None):
        self.out, self.port, self.baud, self.timeout, self.max_line = out, port, baud, timeout, max_line
        self.find_port = find_port
        self.ack = ack
        self.status = status
        self.session = session_id or new_session_id()
        if status is not None:
            status.set(port=port, session=self.session)
        self.seq = 0
        self.counts = {"readings": 0, "rejects": 0, "gaps": 0}
        self._last_flush = time.monotonic()

    # -- what goes out ------------------------------------------------------------------
    def _event(self, event: SessionEvent) -> None:
        self.out.send([event.message()])

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
            self.counts["readings"] += 1
            self.out.send([reading_message(parsed.sensor, repr(parsed.value), self.session, self.seq, ts_us)])
        else:
            self.counts["rejects"] += 1
            log.debug("rejected line %d (%s): %s", self.seq, parsed.reason, parsed.raw)
            self.out.send([Reject(self.session, self.seq, ts_us, parsed.reason, parsed.raw).message()])

    def maybe_flush(self, force: bool = False, interval: float = FLUSH_INTERVAL_S) -> bool:
        now = time.monotonic()
        if force or now - self._last_flush >= interval:
            self.out.flush()
            self._last_flush = now
            return True
        return False

    # -- the loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Read until `stop`. Raises PortError only for a lasting problem (permission denied, bad
        settings) on the first open; an absent or vanished port is waited for."""
        log.info("session %s: port %s at %d baud", self.session, self.port, self.baud)
        self._event(SessionStart(session=self.session, port=self.port, baud=self.baud, host=socket.gethostname(),
                                 ts_us=now_us(), pid=os.getpid()))
        self.maybe_flush(force=True)
        gap_start: int | None = None   # while the port is away, after a stream was read from it
        backoff = BACKOFF_START_S
        opened_once = warned = False   # warned: the log told the operator the port stays away
        away_since: float | None = None  # monotonic time the port became unavailable
        try:
            while not stop.is_set():
                try:
                    if self.find_port is not None:
                        self.port = self.find_port()
                    port = open_port(self.port, self.baud, self.timeout)
                except PortError as exc:
                    if exc.lasting and not opened_once:
                        self._set_status(FAILED, str(exc))
                        raise
                    self._set_status(PORT_BUSY if exc.busy else RECONNECTING if opened_once else WAITING,
                                     str(exc))
                    now = time.monotonic()
                    if away_since is None:
                        away_since = now
                        log.info("%s; waiting for it (retrying every %.1f-%.1fs)", exc, BACKOFF_START_S,
                                 BACKOFF_MAX_S)
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
            self._event(SessionEnd(session=self.session, ts_us=now_us()))
            self.maybe_flush(force=True)
            log.info("session %s ended: %s", self.session, self.counts)
            if self.status is not None and self.status.state != FAILED:
                self.status.close()

    def _set_status(self, state: str, detail: str) -> None:
        if self.status is not None:
            self.status.set(state, detail=detail, port=self.port)

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
                    read_total += len(data)
                    ts = now_us()
                    for line, too_long in splitter.feed(data):
                        self.handle_line(line, ts, too_long=too_long)
                    last_at = ts / 1e6
                if self.status is not None:
                    self.status.lines(self.seq, last_at)
                done = read_total - splitter.pending()
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
