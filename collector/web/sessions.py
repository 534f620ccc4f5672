"""Web sessions: sign in once with an API token, then a sealed cookie stands for it.

The cookie is sealed (AES-GCM) with a secret kept beside the command-signing keys, so every
collector instance sharing that folder accepts it and nothing about the session lives in memory.
It carries the session id, the digest of the API token and an absolute expiry; the raw token is
never stored anywhere. Each request looks the token up again, so a revoked token ends its sessions
on the next request; signing out is recorded in the audit log, which every instance reads.

CSRF tokens are derived from the session id (or, before sign-in, from a nonce cookie), so a form
posted from another site, which cannot read them, is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_COOKIE = "rmm_session"
SIGNIN_COOKIE = "rmm_signin"
SESSION_LIFETIME = timedelta(hours=12)
SIGNIN_LIFETIME = timedelta(hours=1)
SECRET_FILE = "web-session.secret"

_NONCE_BYTES = 12


class SessionSecretError(Exception):
    """The session secret cannot be read or created safely (the message says why)."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    session_id: str
    token_hash: str
    expires_at: datetime


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _read_secret(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SessionSecretError(
            f"{path} is readable by others (mode {mode:o}); run chmod 600 on it"
        )
    raw = path.read_text().strip()
    try:
        secret = bytes.fromhex(raw)
    except ValueError as exc:
        raise SessionSecretError(f"{path} does not hold a hex secret") from exc
    if len(secret) < 32:
        raise SessionSecretError(f"{path} holds fewer than 32 bytes")
    return secret


def load_or_create_secret(folder: Path) -> bytes:
    """The folder's session secret, created (mode 0600) by whichever instance needs it first."""
    path = folder / SECRET_FILE
    if path.exists():
        return _read_secret(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    draft = folder / f".{SECRET_FILE}.{secrets.token_hex(8)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # A hard link appears complete or not at all, and never replaces another instance's
        # secret created meanwhile.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return _read_secret(path)


class SessionSealer:
    """Seals and opens session cookies and derives CSRF tokens, all from one secret."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hmac.digest(secret, b"rmm web session cookie", hashlib.sha256))
        self._csrf_key = hmac.digest(secret, b"rmm web csrf", hashlib.sha256)

    def seal(self, claims: SessionClaims) -> str:
        body = json.dumps(
            {
                "sid": claims.session_id,
                "tok": claims.token_hash,
                "exp": int(claims.expires_at.timestamp()),
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return _b64encode(nonce + self._aead.encrypt(nonce, body, SESSION_COOKIE.encode()))

    def open(self, cookie: str, now: datetime) -> SessionClaims | None:
        """The claims of a genuine, unexpired cookie; None for anything else."""
        try:
            sealed = _b64decode(cookie)
            body = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], SESSION_COOKIE.encode()
            )
            data = json.loads(body)
            claims = SessionClaims(
                session_id=str(data["sid"]),
                token_hash=str(data["tok"]),
                expires_at=datetime.fromtimestamp(int(data["exp"]), UTC),
            )
        except (InvalidTag, ValueError, binascii.Error, KeyError, TypeError):
            return None
        if claims.expires_at <= now:
            return None
        return claims

    def csrf_token(self, purpose: str, binding: str) -> str:
        digest = hmac.digest(self._csrf_key, f"{purpose}\n{binding}".encode(), hashlib.sha256)
        return _b64encode(digest)

    def check_csrf(self, purpose: str, binding: str, given: str) -> bool:
        return hmac.compare_digest(self.csrf_token(purpose, binding), given)


def new_session(token_hash: str, now: datetime) -> SessionClaims:
    return SessionClaims(
        session_id=secrets.token_urlsafe(18),
        token_hash=token_hash,
        expires_at=now + SESSION_LIFETIME,
    )


def session_target(session_id: str) -> str:
    """How the audit log names a web session (sign-in and sign-out entries)."""
    return f"web-session:{session_id}"
