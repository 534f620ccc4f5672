"""Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps.

A code is accepted for the current step and one step either side (clock drift between the phone
and the collector). Which step a code belongs to is returned, so the store can refuse it the
second time: a code is good once (`collector.store.users`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from urllib.parse import quote, urlencode

DIGITS = 6
STEP_S = 30
DRIFT_STEPS = 1
ISSUER = "RMM Collector"


def new_secret() -> str:
    """A fresh shared secret: 160 random bits (RFC 4226's recommendation), base32 unpadded."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def _key(secret_b32: str) -> bytes:
    text = secret_b32.strip().replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def step_at(moment: datetime) -> int:
    return int(moment.timestamp()) // STEP_S


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226's HOTP value for `counter`, as `digits` decimal digits."""
    mac = hmac.digest(key, struct.pack(">Q", counter), getattr(hashlib, digest))
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def code_at(secret_b32: str, moment: datetime) -> str:
    """The code an authenticator app shows at `moment`."""
    return hotp(_key(secret_b32), step_at(moment))


def matching_step(secret_b32: str, code: str, moment: datetime) -> int | None:
    """The step whose code `code` is (within the drift allowed), or None."""
    given = code.strip().replace(" ", "")
    if len(given) != DIGITS or not given.isascii() or not given.isdigit():
        return None
    key = _key(secret_b32)
    now = step_at(moment)
    found: int | None = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        # Every candidate is compared, so the time taken says nothing about which matched.
        if hmac.compare_digest(hotp(key, step), given):
            found = step
    return found


def provisioning_uri(secret_b32: str, account: str, issuer: str = ISSUER) -> str:
    """The `otpauth://totp/...` URI authenticator apps read (from a QR code or pasted)."""
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode(
        {
            "secret": secret_b32,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_S,
        }
    )
    return f"otpauth://totp/{label}?{query}"
