"""Passwords: generated for new people, stored as argon2id hashes (memory-hard), checked off the
event loop (one check takes tens of milliseconds and 64 MiB by design).

Recovery codes are random (50 bits each) and single use; they are stored as SHA-256 digests,
which is enough for secrets of that strength that the sign-in throttle also guards.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD = 12
MAX_PASSWORD = 256
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i

_HASHER = PasswordHasher()  # argon2id with the library's current defaults (RFC 9106 low-memory)
# A hash of a password nobody has: checked when the user name is unknown, so the time an answer
# takes does not tell which user names exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def new_password() -> str:
    """A generated password of about 120 bits, to be changed at first sign-in."""
    return secrets.token_urlsafe(15)


def password_problem(password: str) -> str | None:
    """Why a chosen password is refused, or None (length is what counts; NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD:
        return f"Choose a password of at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Choose a password of at most {MAX_PASSWORD} characters."
    if "\x00" in password:
        return "A password cannot contain a NUL character."
    return None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# At most this many hashes at once (each takes 64 MiB and ~0.1 s of a core): a burst of sign-in
# attempts queues here instead of filling the memory of a small collector host.
_AT_ONCE = asyncio.Semaphore(2)


async def hash_password_async(password: str) -> str:
    async with _AT_ONCE:
        return await asyncio.to_thread(hash_password, password)


async def verify_password_async(stored_hash: str | None, password: str) -> bool:
    async with _AT_ONCE:
        return await asyncio.to_thread(verify_password, stored_hash, password)


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """Codes like `k7qm-2xtd-pe`: ten characters from a 31-letter alphabet (about 50 bits)."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def recovery_digest(code: str) -> str:
    normal = code.strip().lower().replace("-", "").replace(" ", "")
    return hashlib.sha256(b"rmm recovery code\n" + normal.encode()).hexdigest()


def looks_like_recovery_code(code: str) -> bool:
    normal = code.strip().lower().replace("-", "").replace(" ", "")
    return len(normal) == 10 and all(c in _RECOVERY_ALPHABET for c in normal)
