"""People who sign in to the pages: accounts, their second factor and recovery codes.

A one-time code is good once: accepting one moves `totp_last_step` forward in the same statement
that checks it, so two instances (or two tabs) cannot both accept it. Each change that should end
a person's sessions (disable, MFA reset, password change) moves `session_epoch` on.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from collector.store.part import StorePart
from collector.store.records import AuditEntry, Conflict, NotFound, Role
from collector.store.sql import Row, Tx, UniqueViolation
from collector.store.user_records import UserInfo, UserSecrets

_COLUMNS = (
    "u.user_id, u.name, u.role, u.created_at, u.disabled_at, u.must_change_password, "
    "u.mfa_confirmed_at, u.session_epoch, u.password_hash, u.totp_secret, u.totp_last_step"
)


class Users(StorePart):
    def _user(self, r: Row, clients: frozenset[str] | None) -> UserInfo:
        d = self.dialect
        return UserInfo(
            user_id=r[0],
            name=r[1],
            role=cast(Role, r[2]),
            clients=clients,
            created_at=d.instant(r[3]),
            disabled_at=d.opt_instant(r[4]),
            must_change_password=bool(r[5]),
            mfa_enrolled=r[6] is not None,
            session_epoch=int(r[7]),
        )

    async def _read_user(self, tx: Tx, where: str, value: str) -> UserSecrets | None:
        row = await tx.fetchrow(f"SELECT {_COLUMNS} FROM users u WHERE {where} = ?", value)
        if row is None:
            return None
        client_rows = await tx.fetch(
            "SELECT client_id FROM user_clients WHERE user_id = ? ORDER BY client_id", row[0]
        )
        clients = frozenset(r[0] for r in client_rows) or None
        return UserSecrets(self._user(row, clients), row[8], row[9], int(row[10]))

    async def add_user(
        self,
        name: str,
        role: Role,
        password_hash: str,
        totp_secret: str,
        *,
        clients: Sequence[str] = (),
        now: datetime,
        actor: str,
    ) -> UserInfo:
        """A new person (`clients`: ids they are limited to; none = every client)."""
        user_id = str(uuid.uuid4())

        async def run(tx: Tx) -> UserInfo:
            for client_id in clients:
                if (
                    await tx.fetchrow("SELECT 1 FROM clients WHERE client_id = ?", client_id)
                    is None
                ):
                    raise NotFound(f"no client {client_id!r}")
            try:
                await tx.execute(
                    "INSERT INTO users (user_id, name, role, password_hash, totp_secret, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    user_id,
                    name,
                    role,
                    password_hash,
                    totp_secret,
                    now,
                )
            except UniqueViolation as exc:
                raise Conflict(f"a person named {name!r} already exists") from exc
            await tx.executemany(
                "INSERT INTO user_clients (user_id, client_id) VALUES (?, ?)",
                [(user_id, c) for c in sorted(set(clients))],
            )
            await self._audit(
                tx,
                AuditEntry(
                    now, actor, "user.created", name, {"role": role, "clients": sorted(clients)}
                ),
            )
            found = await self._read_user(tx, "u.user_id", user_id)
            assert found is not None
            return found.user

        return await self._engine.write(run)

    async def list_users(self) -> list[UserInfo]:
        async def run(tx: Tx) -> list[UserInfo]:
            rows = await tx.fetch(f"SELECT {_COLUMNS} FROM users u ORDER BY u.name")
            scopes: dict[str, set[str]] = {}
            for user_id, client_id in await tx.fetch("SELECT user_id, client_id FROM user_clients"):
                scopes.setdefault(user_id, set()).add(client_id)
            return [
                self._user(r, frozenset(scopes[r[0]]) if r[0] in scopes else None) for r in rows
            ]

        return await self._engine.read(run)

    async def find_user(self, name: str) -> UserInfo | None:
        secrets = await self.user_secrets(name)
        return None if secrets is None else secrets.user

    async def get_user(self, user_id: str) -> UserInfo | None:
        async def run(tx: Tx) -> UserSecrets | None:
            return await self._read_user(tx, "u.user_id", user_id)

        found = await self._engine.read(run)
        return None if found is None else found.user

    async def user_secrets(self, name: str) -> UserSecrets | None:
        """The person named, with what checking their sign-in needs."""

        async def run(tx: Tx) -> UserSecrets | None:
            return await self._read_user(tx, "u.name", name)

        return await self._engine.read(run)

    async def _change(
        self, tx: Tx, name: str, sql: str, *args: object, entry: AuditEntry
    ) -> UserInfo:
        count = await tx.execute(f"UPDATE users SET {sql} WHERE name = ?", *args, name)
        if not count:
            raise NotFound(f"no person named {name!r}")
        await self._audit(tx, entry)
        found = await self._read_user(tx, "u.name", name)
        assert found is not None
        return found.user

    async def disable_user(self, name: str, *, now: datetime, actor: str) -> UserInfo:
        """The person can no longer sign in; their sessions end at once."""

        async def run(tx: Tx) -> UserInfo:
            return await self._change(
                tx,
                name,
                "disabled_at = COALESCE(disabled_at, ?), session_epoch = session_epoch + 1",
                now,
                entry=AuditEntry(now, actor, "user.disabled", name, {}),
            )

        return await self._engine.write(run)

    async def reset_user_mfa(
        self, name: str, totp_secret: str, *, now: datetime, actor: str
    ) -> UserInfo:
        """A new TOTP secret to enroll at the next sign-in; recovery codes and sessions end."""

        async def run(tx: Tx) -> UserInfo:
            user = await self._change(
                tx,
                name,
                "totp_secret = ?, totp_last_step = -1, mfa_confirmed_at = NULL, "
                "session_epoch = session_epoch + 1",
                totp_secret,
                entry=AuditEntry(now, actor, "user.mfa_reset", name, {}),
            )
            await tx.execute("DELETE FROM user_recovery_codes WHERE user_id = ?", user.user_id)
            return user

        return await self._engine.write(run)

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Accept the code of `step` unless that step (or a later one) was already used."""

        async def run(tx: Tx) -> bool:
            count = await tx.execute(
                "UPDATE users SET totp_last_step = ? WHERE user_id = ? AND totp_last_step < ?",
                step,
                user_id,
                step,
            )
            return count > 0

        return await self._engine.write(run)

    async def confirm_mfa(
        self, user_id: str, step: int, recovery_digests: Sequence[str], *, now: datetime
    ) -> bool:
        """The first code proves the second factor is set up: it is used, and the recovery
        codes (as digests) replace any earlier ones. False if that code was used already."""

        async def run(tx: Tx) -> bool:
            count = await tx.execute(
                "UPDATE users SET totp_last_step = ?, mfa_confirmed_at = ? "
                "WHERE user_id = ? AND totp_last_step < ? AND mfa_confirmed_at IS NULL",
                step,
                now,
                user_id,
                step,
            )
            if not count:
                return False
            await tx.execute("DELETE FROM user_recovery_codes WHERE user_id = ?", user_id)
            await tx.executemany(
                "INSERT INTO user_recovery_codes (user_id, code_hash) VALUES (?, ?)",
                [(user_id, digest) for digest in recovery_digests],
            )
            return True

        return await self._engine.write(run)

    async def use_recovery_code(self, user_id: str, digest: str, *, now: datetime) -> bool:
        """Spend one recovery code; False if it is not one of theirs or was spent."""

        async def run(tx: Tx) -> bool:
            count = await tx.execute(
                "UPDATE user_recovery_codes SET used_at = ? "
                "WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
                now,
                user_id,
                digest,
            )
            return count > 0

        return await self._engine.write(run)

    async def recovery_codes_left(self, user_id: str) -> int:
        row = await self._engine.fetchrow(
            "SELECT COUNT(*) FROM user_recovery_codes WHERE user_id = ? AND used_at IS NULL",
            user_id,
        )
        return 0 if row is None else int(row[0])

    async def set_password(
        self, user_id: str, password_hash: str, *, now: datetime, actor: str
    ) -> UserInfo:
        """A password the person chose: no forced change any more; other sessions end."""

        async def run(tx: Tx) -> UserInfo:
            row = await tx.fetchrow("SELECT name FROM users WHERE user_id = ?", user_id)
            if row is None:
                raise NotFound(f"no person with id {user_id!r}")
            return await self._change(
                tx,
                row[0],
                "password_hash = ?, must_change_password = 0, session_epoch = session_epoch + 1",
                password_hash,
                entry=AuditEntry(now, actor, "user.password_changed", row[0], {}),
            )

        return await self._engine.write(run)
