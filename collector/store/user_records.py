"""Records of the people who sign in to the pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from collector.store.records import Role


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A person who signs in to the pages (never their secrets: see `UserSecrets`)."""

    user_id: str
    name: str
    role: Role
    clients: frozenset[str] | None  # client ids the person may see; None = every client
    created_at: datetime
    disabled_at: datetime | None
    must_change_password: bool
    mfa_enrolled: bool  # the second factor was confirmed with a first code
    session_epoch: int  # sessions of an earlier epoch have ended


@dataclass(frozen=True, slots=True)
class UserSecrets:
    user: UserInfo
    password_hash: str
    totp_secret: str
    totp_last_step: int
