"""Web sessions: a person signs in once (user name, password, code), then a sealed cookie
stands for them.

The cookie is sealed (AES-GCM) with a secret kept beside the command-signing keys, so every
collector instance sharing that folder accepts it and nothing about the session lives in memory.
It carries the session id, who it is for (a person's id and session epoch, or, for break-glass
sign-in with an API token, the token's digest), when the person last gave a code, and an
absolute expiry; no secret is ever stored in it. Each request looks the person (or token) up
again, so disabling a person, resetting their second factor or revoking the token ends its
sessions on the next request; signing out is recorded in the audit log, which every instance
reads.

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
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_COOKIE = "rmm_session"
SIGNIN_COOKIE = "rmm_signin"
SESSION_LIFETIME = timedelta(hours=12)
SIGNIN_LIFETIME = timedelta(hours=1)
SECRET_FILE = "web-session.secret"
# Between entering the password and the first code (setting up the second factor).
PENDING_LIFETIME = timedelta(minutes=10)
PENDING_PURPOSE = "rmm web pending sign-in"

SessionKind = Literal["user", "token", "oidc"]

_NONCE_BYTES = 12


class SessionSecretError(Exception):
    """The session secret cannot be read or created safely (the message says why)."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    session_id: str
    kind: SessionKind
    subject: str  # the person's user id, or the API token's digest
    epoch: int  # the person's session epoch when signed in (0 for a token)
    authenticated_at: datetime  # the last code given (sign-in), for re-authentication
    expires_at: datetime
    # Only for single sign-on ("oidc"), where the identity provider, not the store, knows them.
    name: str = ""
    role: str = ""


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

    def _seal(self, data: dict[str, object], purpose: str) -> str:
        body = json.dumps(data, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return _b64encode(nonce + self._aead.encrypt(nonce, body, purpose.encode()))

    def _open(self, sealed_text: str, purpose: str) -> dict[str, object] | None:
        try:
            sealed = _b64decode(sealed_text)
            body = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], purpose.encode()
            )
            data = json.loads(body)
        except (InvalidTag, ValueError, binascii.Error, TypeError):
            return None
        return data if isinstance(data, dict) else None

    def seal(self, claims: SessionClaims) -> str:
        return self._seal(
            {
                "sid": claims.session_id,
                "knd": claims.kind,
                "sub": claims.subject,
                "epo": claims.epoch,
                "aat": int(claims.authenticated_at.timestamp()),
                "exp": int(claims.expires_at.timestamp()),
                "nam": claims.name,
                "rol": claims.role,
            },
            SESSION_COOKIE,
        )

    def open(self, cookie: str, now: datetime) -> SessionClaims | None:
        """The claims of a genuine, unexpired cookie; None for anything else."""
        data = self._open(cookie, SESSION_COOKIE)
        if data is None:
            return None
        try:
            kind: SessionKind
            if data["knd"] == "user":
                kind = "user"
            elif data["knd"] == "token":
                kind = "token"
            elif data["knd"] == "oidc":
                kind = "oidc"
            else:
                return None
            claims = SessionClaims(
                session_id=str(data["sid"]),
                kind=kind,
                subject=str(data["sub"]),
                epoch=int(str(data["epo"])),
                authenticated_at=datetime.fromtimestamp(int(str(data["aat"])), UTC),
                expires_at=datetime.fromtimestamp(int(str(data["exp"])), UTC),
                name=str(data.get("nam", "")),
                role=str(data.get("rol", "")),
            )
        except (KeyError, ValueError, TypeError, OverflowError):
            return None
        if claims.expires_at <= now:
            return None
        return claims

    def seal_value(self, purpose: str, data: dict[str, object], expires_at: datetime) -> str:
        """Any small value sealed for `purpose`, good until `expires_at`."""
        return self._seal({**data, "exp": int(expires_at.timestamp())}, purpose)

    def open_value(self, purpose: str, sealed: str, now: datetime) -> dict[str, object] | None:
        data = self._open(sealed, purpose) if sealed else None
        if data is None:
            return None
        try:
            if int(str(data["exp"])) <= now.timestamp():
                return None
        except (KeyError, ValueError):
            return None
        return data

    def seal_pending(self, user_id: str, epoch: int, now: datetime) -> str:
        """A ticket saying the password was right, carried while the person sets up their
        second factor (never a session: it opens no page)."""
        expires = int((now + PENDING_LIFETIME).timestamp())
        return self._seal({"sub": user_id, "epo": epoch, "exp": expires}, PENDING_PURPOSE)

    def open_pending(self, ticket: str, now: datetime) -> tuple[str, int] | None:
        """The user id and epoch of a genuine, unexpired pending ticket."""
        data = self._open(ticket, PENDING_PURPOSE)
        if data is None:
            return None
        try:
            if int(str(data["exp"])) <= now.timestamp():
                return None
            return str(data["sub"]), int(str(data["epo"]))
        except (KeyError, ValueError, TypeError):
            return None

    def csrf_token(self, purpose: str, binding: str) -> str:
        digest = hmac.digest(self._csrf_key, f"{purpose}\n{binding}".encode(), hashlib.sha256)
        return _b64encode(digest)

    def check_csrf(self, purpose: str, binding: str, given: str) -> bool:
        return hmac.compare_digest(self.csrf_token(purpose, binding), given)


def new_session(
    kind: SessionKind,
    subject: str,
    epoch: int,
    now: datetime,
    *,
    name: str = "",
    role: str = "",
    authenticated_at: datetime | None = None,
) -> SessionClaims:
    return SessionClaims(
        session_id=secrets.token_urlsafe(18),
        kind=kind,
        subject=subject,
        epoch=epoch,
        authenticated_at=authenticated_at or now,
        expires_at=now + SESSION_LIFETIME,
        name=name,
        role=role,
    )


def session_target(session_id: str) -> str:
    """How the audit log names a web session (sign-in and sign-out entries)."""
    return f"web-session:{session_id}"
