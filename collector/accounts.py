"""People's accounts, as the command line and the admin pages both create and check them.

`create_user` generates the password and the TOTP secret that are shown once; `check_code`
accepts a 6-digit code once (or spends a recovery code) for a person whose second factor is set up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from collector import passwords, totp
from collector.secretbox import SecretBox, SecretUnreadable
from collector.store.base import Role, Store, UserInfo, UserSecrets

MAX_NAME = 64
CodeKind = Literal["totp", "recovery"]


@dataclass(frozen=True, slots=True)
class NewCredentials:
    """What a new person (or one whose MFA was reset) is given once."""

    user: UserInfo
    password: str | None
    totp_secret: str
    totp_uri: str

    def as_json(self) -> dict[str, str | None]:
        return {
            "name": self.user.name,
            "role": self.user.role,
            "password": self.password,
            "totp_secret": self.totp_secret,
            "totp_uri": self.totp_uri,
        }


def name_problem(name: str) -> str | None:
    """Why a user name is refused, or None: 1 to 64 printable characters without spaces."""
    if not name or len(name) > MAX_NAME:
        return f"a user name has 1 to {MAX_NAME} characters"
    if not name.isprintable() or any(c.isspace() for c in name):
        return "a user name has no spaces or control characters"
    return None


async def create_user(
    store: Store,
    name: str,
    role: Role,
    *,
    clients: Sequence[str] = (),
    box: SecretBox,
    now: datetime,
    actor: str,
) -> NewCredentials:
    password = passwords.new_password()
    secret = totp.new_secret()
    user = await store.add_user(
        name,
        role,
        await passwords.hash_password_async(password),
        box.seal(secret, context=name),
        clients=clients,
        now=now,
        actor=actor,
    )
    return NewCredentials(user, password, secret, totp.provisioning_uri(secret, name))


async def reset_mfa(
    store: Store, name: str, *, box: SecretBox, now: datetime, actor: str
) -> NewCredentials:
    secret = totp.new_secret()
    user = await store.reset_user_mfa(name, box.seal(secret, context=name), now=now, actor=actor)
    return NewCredentials(user, None, secret, totp.provisioning_uri(secret, name))


def totp_secret(secrets: UserSecrets, box: SecretBox) -> str | None:
    """The person's TOTP secret in the clear; None if this keys folder cannot open it."""
    try:
        return box.open(secrets.totp_secret, context=secrets.user.name)
    except SecretUnreadable:
        return None


async def check_code(
    store: Store, secrets: UserSecrets, code: str, now: datetime, *, box: SecretBox
) -> CodeKind | None:
    """Accept `code` for this person once: a TOTP code of now (±30 s) not used before, or an
    unspent recovery code. None if neither."""
    secret = totp_secret(secrets, box)
    step = None if secret is None else totp.matching_step(secret, code, now)
    if step is not None:
        return "totp" if await store.use_totp_step(secrets.user.user_id, step) else None
    if passwords.looks_like_recovery_code(code) and await store.use_recovery_code(
        secrets.user.user_id, passwords.recovery_digest(code), now=now
    ):
        return "recovery"
    return None
