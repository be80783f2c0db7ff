"""The optional password gate of the operator page (`[app] password`).

Off when the password is empty (the page is then served on 127.0.0.1 only, by default). The
comparison runs in constant time (hmac.compare_digest on UTF-8 bytes), so response times do not
reveal how much of a guess was right.
"""
from __future__ import annotations

import hmac


def gate_enabled(password: str) -> bool:
    return bool(password)


def check_password(expected: str, given: str | None) -> bool:
    """True when `given` is the configured password; always False when no password is set, so a
    gate cannot be opened by an empty guess."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), str(given).encode("utf-8"))
