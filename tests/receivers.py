"""Real receivers for notification tests, on 127.0.0.1 only, stopped by their fixtures: an HTTP
server for webhooks and an SMTP server (aiosmtpd) with STARTTLS and a login."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.system import free_port


class WebhookReceiver:
    """Records every POST (time received, headers, JSON body). `status` is the answer to give;
    `delay_s` holds each answer back (a slow receiver); `stop()`/`start()` take it down and bring
    it back on the same port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[dict] = []
        self.status = 200
        self.delay_s = 0.0
        self.arrived = threading.Event()  # set on every request that comes in
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrived.set()
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver.status == 200:
                    receiver.received.append(
                        {"at": time.time(), "headers": dict(self.headers), "body": json.loads(body)}
                    )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def notifications(self) -> list[dict]:
        return [n for r in self.received for n in r["body"].get("notifications", [])]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl for this test only."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 requiring STARTTLS before AUTH LOGIN/PLAIN with one user."""

    def __init__(self, folder: Path, user: str = "vigie", password: str = "s3cret-smtp"):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.cert, key = self_signed_cert(folder)
        self.messages: list = []
        self.logins: list[str] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                receiver.messages.append(message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            if ok:
                receiver.logins.append(user)
            return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(key))
        self.port = free_port()
        self._controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticator,
            auth_require_tls=True,
            ready_timeout=30,
        )

    def start(self) -> "SmtpReceiver":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
