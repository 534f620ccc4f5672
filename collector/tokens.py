"""Secrets handed out by the collector: random 256-bit tokens, stored only as SHA-256 digests.

A fast digest is enough here because the tokens are long random values, not passwords: there is no
dictionary to try. The prefix tells a person (or a secret scanner) what kind of token leaked.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

TokenKind = Literal["agent", "api", "enrollment"]

_PREFIX: dict[TokenKind, str] = {"agent": "rmmag_", "api": "rmmapi_", "enrollment": "rmmen_"}


def new_token(kind: TokenKind) -> str:
    return _PREFIX[kind] + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
