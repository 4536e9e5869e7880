"""HMAC signing of ``/control`` calls, shared by both ends of the wire.

orch's Action Executor signs with :func:`signed_headers`; a service checks with
:func:`verify` (or :func:`check` when it wants the reason).  The signed string is
``v0:{timestamp}:{raw body}``: the timestamp is inside the MAC so an old request cannot be
re-dated, and the raw bytes are signed (not a re-serialised JSON) so both sides agree
byte for byte.  Standard library only, so a client can import it without aiohttp.
"""

from __future__ import annotations

import hashlib
import hmac
import re

VERSION = "v0"
TIMESTAMP_HEADER = "X-Orch-Timestamp"
SIGNATURE_HEADER = "X-Orch-Signature"
WINDOW_S = 300.0

_SIGNATURE = re.compile(r"v0=[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v0=<hex HMAC-SHA256 of b"v0:{timestamp}:" + body>``."""
    base = f"{VERSION}:{int(timestamp)}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def signed_headers(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The two headers that authenticate ``body`` at time ``now`` (Unix seconds)."""
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def check(
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window: float = WINDOW_S,
) -> str | None:
    """Why the call is refused, or ``None`` when it is authentic and fresh.

    The reasons name the header and the rule, never the expected signature.
    """
    if not secret:
        return "no control secret is configured"
    if not timestamp:
        return f"missing {TIMESTAMP_HEADER} header"
    if not signature:
        return f"missing {SIGNATURE_HEADER} header"
    if not _TIMESTAMP.fullmatch(timestamp):
        return f"{TIMESTAMP_HEADER} must be whole Unix seconds"
    if not _SIGNATURE.fullmatch(signature):
        return f"{SIGNATURE_HEADER} must look like v0=<64 hex digits>"
    age = now - int(timestamp)
    if age > window:
        return f"{TIMESTAMP_HEADER} is {age:.0f} s old; the window is {window:.0f} s"
    if -age > window:
        return f"{TIMESTAMP_HEADER} is {-age:.0f} s in the future; the window is {window:.0f} s"
    expected = sign(secret, int(timestamp), body)
    # Both are ASCII here (the regex above), so comparing bytes is exact and constant-time;
    # lower() because hex case is a matter of taste in other languages' HMAC libraries.
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        return "signature does not match"
    return None


def verify(
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window: float = WINDOW_S,
) -> bool:
    """True when ``signature`` authenticates ``body`` at ``timestamp`` within ``window``."""
    return check(secret, timestamp, signature, body, now, window) is None
