"""Clients, their enrollment tokens, and the API tokens of people and jobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from collector.store.part import StorePart
from collector.store.records import (
    ApiTokenInfo,
    AuditEntry,
    Client,
    Conflict,
    EnrollmentTokenInfo,
    NotFound,
    Role,
)
from collector.store.sql import Row, Tx, UniqueViolation
from wire.times import format_instant

_TOKEN_COLUMNS = "token_id, client_id, created_at, expires_at, revoked_at, max_uses, uses"
_API_TOKEN_COLUMNS = "token_id, name, role, created_at, revoked_at"


class ClientsAndTokens(StorePart):
    def _client(self, r: Row) -> Client:
        return Client(r[0], r[1], self.dialect.instant(r[2]))

    def _api_token(self, r: Row) -> ApiTokenInfo:
        d = self.dialect
        return ApiTokenInfo(r[0], r[1], cast(Role, r[2]), d.instant(r[3]), d.opt_instant(r[4]))

    # clients

    async def create_client(self, name: str, *, now: datetime, actor: str) -> Client:
        client = Client(client_id=str(uuid.uuid4()), name=name, created_at=now)

        async def run(tx: Tx) -> Client:
            try:
                await tx.execute(
                    "INSERT INTO clients (client_id, name, created_at) VALUES (?, ?, ?)",
                    client.client_id,
                    name,
                    now,
                )
            except UniqueViolation as exc:
                raise Conflict(f"a client named {name!r} already exists") from exc
            await self._audit(
                tx, AuditEntry(now, actor, "client.created", client.client_id, {"name": name})
            )
            return client

        return await self._engine.write(run)

    async def list_clients(self) -> list[Client]:
        rows = await self._engine.fetch(
            "SELECT client_id, name, created_at FROM clients ORDER BY name"
        )
        return [self._client(r) for r in rows]

    async def find_client(self, name_or_id: str) -> Client | None:
        """By id, or else by name (an id wins when one client is named like another's id)."""
        row = await self._engine.fetchrow(
            "SELECT client_id, name, created_at FROM clients WHERE client_id = ? OR name = ? "
            "ORDER BY CASE WHEN client_id = ? THEN 0 ELSE 1 END LIMIT 1",
            name_or_id,
            name_or_id,
            name_or_id,
        )
        return None if row is None else self._client(row)

    # enrollment tokens

    async def add_enrollment_token(
        self,
        client_id: str,
        token_hash: str,
        *,
        expires_at: datetime,
        now: datetime,
        actor: str,
        max_uses: int | None = None,
    ) -> EnrollmentTokenInfo:
        if max_uses is not None and max_uses < 1:
            raise ValueError("max_uses must be at least 1")
        info = EnrollmentTokenInfo(str(uuid.uuid4()), client_id, now, expires_at, None, max_uses)

        async def run(tx: Tx) -> EnrollmentTokenInfo:
            if await tx.fetchrow("SELECT 1 FROM clients WHERE client_id = ?", client_id) is None:
                raise NotFound(f"no client {client_id!r}")
            await tx.execute(
                "INSERT INTO enrollment_tokens (token_id, client_id, token_hash, created_at, "
                "expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?)",
                info.token_id,
                client_id,
                token_hash,
                now,
                expires_at,
                max_uses,
            )
            await self._audit(
                tx,
                AuditEntry(
                    now,
                    actor,
                    "enrollment_token.created",
                    client_id,
                    {
                        "token_id": info.token_id,
                        "expires_at": format_instant(expires_at),
                        "max_uses": max_uses,
                    },
                ),
            )
            return info

        return await self._engine.write(run)

    async def list_enrollment_tokens(self, client_id: str) -> list[EnrollmentTokenInfo]:
        d = self.dialect
        rows = await self._engine.fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM enrollment_tokens WHERE client_id = ? "
            "ORDER BY created_at, token_id",
            client_id,
        )
        return [
            EnrollmentTokenInfo(
                r[0],
                r[1],
                d.instant(r[2]),
                d.instant(r[3]),
                d.opt_instant(r[4]),
                None if r[5] is None else int(r[5]),
                int(r[6]),
            )
            for r in rows
        ]

    async def revoke_enrollment_tokens(
        self, client_id: str, *, token_id: str | None, now: datetime, actor: str
    ) -> int:
        sql = (
            "UPDATE enrollment_tokens SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL"
        )
        args: list[Any] = [now, client_id]
        if token_id is not None:
            sql += " AND token_id = ?"
            args.append(token_id)

        async def run(tx: Tx) -> int:
            count = await tx.execute(sql, *args)
            if count:
                await self._audit(
                    tx,
                    AuditEntry(
                        now,
                        actor,
                        "enrollment_token.revoked",
                        client_id,
                        {"token_id": token_id or "all", "count": count},
                    ),
                )
            return count

        return await self._engine.write(run)

    # API tokens

    async def add_api_token(
        self,
        name: str,
        role: Role,
        token_hash: str,
        *,
        now: datetime,
        actor: str,
        clients: Sequence[str] = (),
    ) -> ApiTokenInfo:
        """`clients` limits the token to those clients' machines (none given: every client)."""
        scope = frozenset(clients) or None
        info = ApiTokenInfo(str(uuid.uuid4()), name, role, now, None, scope)

        async def run(tx: Tx) -> ApiTokenInfo:
            try:
                await tx.execute(
                    "INSERT INTO api_tokens (token_id, name, role, token_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    info.token_id,
                    name,
                    role,
                    token_hash,
                    now,
                )
            except UniqueViolation as exc:
                raise Conflict(f"an active API token named {name!r} already exists") from exc
            for client_id in sorted(scope or ()):
                if (
                    await tx.fetchrow("SELECT 1 FROM clients WHERE client_id = ?", client_id)
                    is None
                ):
                    raise NotFound(f"no client {client_id!r}")
                await tx.execute(
                    "INSERT INTO api_token_clients (token_id, client_id) VALUES (?, ?)",
                    info.token_id,
                    client_id,
                )
            detail: dict[str, object] = {"role": role}
            if scope:
                detail["clients"] = sorted(scope)
            await self._audit(tx, AuditEntry(now, actor, "api_token.created", name, detail))
            return info

        return await self._engine.write(run)

    async def list_api_tokens(self) -> list[ApiTokenInfo]:
        async def run(tx: Tx) -> list[ApiTokenInfo]:
            rows = await tx.fetch(
                f"SELECT {_API_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, token_id"
            )
            return [await self._with_scope(tx, self._api_token(r)) for r in rows]

        return await self._engine.read(run)

    async def _with_scope(self, tx: Tx, info: ApiTokenInfo) -> ApiTokenInfo:
        rows = await tx.fetch(
            "SELECT client_id FROM api_token_clients WHERE token_id = ?", info.token_id
        )
        return replace(info, clients=frozenset(r[0] for r in rows) or None)

    async def revoke_api_token(self, name: str, *, now: datetime, actor: str) -> bool:
        async def run(tx: Tx) -> bool:
            count = await tx.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                now,
                name,
            )
            if count:
                await self._audit(tx, AuditEntry(now, actor, "api_token.revoked", name, {}))
            return count > 0

        return await self._engine.write(run)

    async def find_api_token(self, token_hash: str) -> ApiTokenInfo | None:
        async def run(tx: Tx) -> ApiTokenInfo | None:
            row = await tx.fetchrow(
                f"SELECT {_API_TOKEN_COLUMNS} FROM api_tokens "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                token_hash,
            )
            return None if row is None else await self._with_scope(tx, self._api_token(row))

        return await self._engine.read(run)
