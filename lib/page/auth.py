"""The optional password gate of the operator page (`[app] password`).

Off when the password is empty (the page is then served on 127.0.0.1 only, by default). The
comparison runs in constant time (hmac.compare_digest on UTF-8 bytes), so response times do not
reveal how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time


def gate_enabled(password: str) -> bool:
    return bool(password)


def check_password(expected: str, given: str | None) -> bool:
    """True when `given` is the configured password; always False when no password is set, so a
    gate cannot be opened by an empty guess."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), str(given).encode("utf-8"))


# -- slowing down guesses ----------------------------------------------------------------------
# An outside test made 41 guesses in 12 s. After FREE_GUESSES wrong ones, each further guess from
# the same client must wait twice as long as the last (1 s, 2 s, 4 s ... up to MAX_WAIT_S); a right
# password clears the count. Kept in the page server's process, shared by its sessions.
FREE_GUESSES, FIRST_WAIT_S, MAX_WAIT_S = 3, 1.0, 60.0


class Guesses:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._failed: dict[str, tuple[int, float]] = {}  # client -> (wrong guesses, may guess again at)
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds before `client` may guess again (0: now)."""
        with self._lock:
            _, at = self._failed.get(client, (0, 0.0))
        return max(0.0, at - self.clock())

    def failed(self, client: str) -> None:
        with self._lock:
            n, _ = self._failed.get(client, (0, 0.0))
            n += 1
            wait = 0.0 if n < FREE_GUESSES else min(FIRST_WAIT_S * 2 ** (n - FREE_GUESSES), MAX_WAIT_S)
            self._failed[client] = (n, self.clock() + wait)
            if len(self._failed) > 10_000:  # a bound on memory: the oldest clients are forgotten
                for old in list(self._failed)[:1000]:
                    del self._failed[old]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failed.pop(client, None)


GUESSES = Guesses()


# -- downloads need a logged-in browser ---------------------------------------------------------
# Streamlit serves st.download_button's files at /media/<id> to whoever asks, with no session:
# with a password set, a CSV's URL answered curl, even after the browser had closed. The page
# server (page_server.py) puts `MediaGate` in front: /media/ answers only a request carrying the
# cookie of a browser that logged in. A login mints a token (`new_token`); the logged-in page
# loads `/_vigie/login/<token>` (an invisible image), whose answer sets the cookie.
COOKIE = "vigie_auth"
TOKEN_TTL_S = 12 * 3600.0
LOGIN_PATH = "/_vigie/login/"
_tokens: dict[str, float] = {}  # sha256 of a token -> when it expires (monotonic)
_tokens_lock = threading.Lock()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    token = secrets.token_urlsafe(32)
    with _tokens_lock:
        now = time.monotonic()
        for key in [k for k, until in _tokens.items() if until < now]:
            del _tokens[key]
        _tokens[_digest(token)] = now + TOKEN_TTL_S
    return token


def token_valid(token: str | None) -> bool:
    if not token:
        return False
    with _tokens_lock:
        until = _tokens.get(_digest(token))
    return until is not None and until >= time.monotonic()


def _cookie(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE:
                    return val
    return None


class MediaGate:
    """ASGI middleware: with `password` set, /media/ and the login path answer only as above."""

    def __init__(self, app, password: str):
        self.app, self.enabled = app, gate_enabled(password)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if self.enabled and path.startswith(LOGIN_PATH):
            token = path[len(LOGIN_PATH) :]
            if not token_valid(token):
                return await _respond(send, 403)
            cookie = (f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(TOKEN_TTL_S)}").encode()
            return await _respond(send, 204, [(b"set-cookie", cookie)])
        if self.enabled and path.startswith("/media/") and not token_valid(_cookie(scope)):
            return await _respond(send, 403)
        await self.app(scope, receive, send)


async def _respond(send, status: int, headers=()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"cache-control", b"no-store"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": b""})
