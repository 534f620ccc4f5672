"""Secrets the collector must read back (each person's TOTP secret), sealed at rest with a key
from the keys folder, so a copy of the database (a backup, a replica) gives no second factor.

The key is derived from the pages' session secret (`web-session.secret`, beside the
command-signing keys), which every instance and the command line share through that folder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "v1."
_NONCE = 12


class SecretUnreadable(Exception):
    """A sealed secret this keys folder cannot open (another folder's, or damaged)."""


class SecretBox:
    def __init__(self, folder_secret: bytes) -> None:
        self._aead = AESGCM(hmac.digest(folder_secret, b"rmm secrets at rest", hashlib.sha256))

    @classmethod
    def from_keys_folder(cls, folder: Path) -> SecretBox:
        from collector.web.sessions import load_or_create_secret

        return cls(load_or_create_secret(folder))

    def seal(self, plaintext: str, *, context: str) -> str:
        """`context` (the person's name) binds the sealed value to its row."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, *, context: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise SecretUnreadable("not a sealed secret")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SecretUnreadable("sealed with another keys folder's secret, or damaged") from exc
