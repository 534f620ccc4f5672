"""The store for fleets that outgrow one machine: PostgreSQL through an asyncpg pool.

Several collector processes or hosts may share one database, so every write is safe to run
concurrently with the same write from another instance:

- last-seen flushes take turns (a transaction-level advisory lock), so two instances never
  deadlock on each other's batches, and never move a value another transaction wrote backwards;
- the last-seen flush keeps the newest heartbeat's facts whichever instance flushes first, and
  never moves `last_seen` backwards;
- the expiry sweep runs in one instance at a time (a transaction-level advisory lock), and its
  `UPDATE` re-checks each row after locking it, so a machine's expiry is recorded once;
- the revocation feed is appended under an advisory lock held until commit, so its sequence
  numbers become visible in order and no instance polling `seq > n` can skip one;
- migrations run under an advisory lock, so instances starting together migrate once.

Reads that stream (the inventory) use a server-side cursor inside one read-only, repeatable-read
transaction: one consistent snapshot, a batch of rows in memory at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec

from collector.store.base import (
    MACHINE_STATES,
    AgentEvent,
    AgentIdentity,
    ApiTokenInfo,
    AuditEntry,
    AuditFilter,
    Client,
    ClientOverview,
    CommandFilter,
    CommandRecord,
    CommandResultRecord,
    CommandState,
    Conflict,
    CoveragePeriod,
    EnrollmentTokenInfo,
    EnrollOutcome,
    EnrollRequestRecord,
    ExposureRow,
    HeartbeatRecord,
    InvalidText,
    InventoryRecord,
    MachineFilter,
    MachinePage,
    MachineQuery,
    MachineRecord,
    MachineState,
    NotFound,
    NotOwner,
    OffboardAttention,
    OffboardRequestRecord,
    OffboardState,
    PresenceHistory,
    PresenceRun,
    Role,
    StateWindows,
    StoreError,
)
from collector.store.inventory_json import records_from_json
from collector.store.postgres_schema import MIGRATIONS
from wire.times import EXPIRY, format_instant

T = TypeVar("T")
Connection = Any  # asyncpg.Connection (asyncpg ships no type information)

# Transaction-level advisory lock keys: one per kind of work that must not run twice at once.
_MIGRATION_LOCK = 0x524D4D_0001
_REVOCATION_LOCK = 0x524D4D_0002
_SWEEP_LOCK = 0x524D4D_0003
_FLUSH_LOCK = 0x524D4D_0004

# A flush writes this many machines per statement, so encoding one statement's arguments never
# holds the event loop for more than a few milliseconds.
_FLUSH_CHUNK = 2000
_RETRIES = 5
# Server processes computing one inventory together (each over a share of the table).
_INVENTORY_STREAMS = 2


# to_char formats writing `"2026-11-01T00:00:00Z"`: to to_char `\"` is a literal quote and
# `"T"` literal text. Escape-string literals (E'...') read the same whatever the server's
# standard_conforming_strings says.
_WHOLE_SECOND = r"""E'\\"YYYY-MM-DD"T"HH24:MI:SS"Z\\"'"""
_FRACTION = r"""E'\\"YYYY-MM-DD"T"HH24:MI:SS.US"Z\\"'"""


def _json_instant(column: str) -> str:
    """SQL writing the instant in `column` as a JSON string in UTC (`"2026-11-01T00:00:00Z"`, six
    fraction digits when there is a fraction), with one `to_char` call; NULL stays NULL."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {utc}) = {utc} THEN to_char({utc}, {_WHOLE_SECOND}) "
        f"ELSE to_char({utc}, {_FRACTION}) END"
    )


@contextlib.contextmanager
def _text_refused() -> Iterator[None]:
    """A NUL character in any text sent (a name searched for, a form field): the engine refuses
    it before anything is written, and the caller gets a `StoreError` it can answer with 400."""
    try:
        yield
    except asyncpg.CharacterNotInRepertoireError as exc:
        raise InvalidText("text with a NUL character cannot be stored or searched for") from exc


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
_POOL_MIN = 1
_POOL_MAX = 10


def _detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def _count(status: str) -> int:
    """Rows touched, from a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


def redact(dsn: str) -> str:
    """The URL without its password, fit for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Params:
    """Collects query arguments and names each `$n` placeholder as it is added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


async def _keep_session(conn: Connection) -> None:
    """What a connection needs before the pool hands it out again: usually nothing.

    The store leaves no session state behind (its advisory locks and cursors live and die with
    their transactions, and it never LISTENs or SETs), so the full reset, a round trip after
    every query, is only needed when a transaction was left open by a cancelled task.
    """
    if conn.is_in_transaction():
        await conn.reset()


async def _create_pool(dsn: str, min_size: int, max_size: int) -> Any:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        reset=_keep_session,
        timeout=10,
        # JIT compilation costs more than it saves on these short, index-driven queries.
        server_settings={"application_name": "rmm-collector", "jit": "off"},
    )


async def _create_database(dsn: str) -> None:
    """Create the database the URL names, through the server's maintenance database."""
    name = urlsplit(dsn).path.lstrip("/")
    if not name:
        raise StoreError("the PostgreSQL URL names no database")
    conn = await asyncpg.connect(_with_database(dsn, "postgres"), timeout=10)
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another instance created it first (the second error is the race in flight)
    finally:
        await conn.close()


class PostgresStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._closed = False

    # lifetime

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = _POOL_MIN, max_size: int = _POOL_MAX
    ) -> PostgresStore:
        """Connect (creating the database if it does not exist yet) and migrate."""
        try:
            try:
                pool = await _create_pool(dsn, min_size, max_size)
            except asyncpg.InvalidCatalogNameError:
                await _create_database(dsn)
                pool = await _create_pool(dsn, min_size, max_size)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot open PostgreSQL at {redact(dsn)}: {exc}") from exc
        store = cls(pool)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in applied:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()

    # plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    async def _write(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `fn` in one transaction; retried whole if PostgreSQL aborts it for a conflict."""
        self._check_open()
        attempt = 0
        while True:
            attempt += 1
            try:
                with _text_refused():
                    async with self._pool.acquire() as conn, conn.transaction():
                        return await fn(conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt >= _RETRIES:
                    raise

    async def _read(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        self._check_open()
        with _text_refused():
            async with self._pool.acquire() as conn:
                return await fn(conn)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        self._check_open()
        with _text_refused():
            return cast(list[Any], await self._pool.fetch(sql, *args))

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        self._check_open()
        with _text_refused():
            return await self._pool.fetchrow(sql, *args)

    @staticmethod
    async def _audit(conn: Connection, entry: AuditEntry) -> None:
        await conn.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            _detail_json(entry.detail),
        )

    # clients and enrollment tokens

    async def create_client(self, name: str, *, now: datetime, actor: str) -> Client:
        client = Client(client_id=str(uuid.uuid4()), name=name, created_at=now)

        async def run(conn: Connection) -> Client:
            try:
                await conn.execute(
                    "INSERT INTO clients (client_id, name, created_at) VALUES ($1, $2, $3)",
                    client.client_id,
                    name,
                    now,
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"a client named {name!r} already exists") from exc
            await self._audit(
                conn, AuditEntry(now, actor, "client.created", client.client_id, {"name": name})
            )
            return client

        return await self._write(run)

    async def list_clients(self) -> list[Client]:
        rows = await self._fetch("SELECT client_id, name, created_at FROM clients ORDER BY name")
        return [Client(r[0], r[1], r[2]) for r in rows]

    async def find_client(self, name_or_id: str) -> Client | None:
        row = await self._fetchrow(
            "SELECT client_id, name, created_at FROM clients WHERE client_id = $1 OR name = $1 "
            "ORDER BY client_id = $1 DESC LIMIT 1",
            name_or_id,
        )
        return None if row is None else Client(row[0], row[1], row[2])

    async def add_enrollment_token(
        self, client_id: str, token_hash: str, *, expires_at: datetime, now: datetime, actor: str
    ) -> EnrollmentTokenInfo:
        info = EnrollmentTokenInfo(str(uuid.uuid4()), client_id, now, expires_at, None)

        async def run(conn: Connection) -> EnrollmentTokenInfo:
            if await conn.fetchval("SELECT 1 FROM clients WHERE client_id = $1", client_id) is None:
                raise NotFound(f"no client {client_id!r}")
            await conn.execute(
                "INSERT INTO enrollment_tokens (token_id, client_id, token_hash, created_at, "
                "expires_at) VALUES ($1, $2, $3, $4, $5)",
                info.token_id,
                client_id,
                token_hash,
                now,
                expires_at,
            )
            await self._audit(
                conn,
                AuditEntry(
                    now,
                    actor,
                    "enrollment_token.created",
                    client_id,
                    {"token_id": info.token_id, "expires_at": format_instant(expires_at)},
                ),
            )
            return info

        return await self._write(run)

    async def list_enrollment_tokens(self, client_id: str) -> list[EnrollmentTokenInfo]:
        rows = await self._fetch(
            "SELECT token_id, client_id, created_at, expires_at, revoked_at "
            "FROM enrollment_tokens WHERE client_id = $1 ORDER BY created_at, token_id",
            client_id,
        )
        return [EnrollmentTokenInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def revoke_enrollment_tokens(
        self, client_id: str, *, token_id: str | None, now: datetime, actor: str
    ) -> int:
        async def run(conn: Connection) -> int:
            sql = (
                "UPDATE enrollment_tokens SET revoked_at = $1 "
                "WHERE client_id = $2 AND revoked_at IS NULL"
            )
            args: list[Any] = [now, client_id]
            if token_id is not None:
                sql += " AND token_id = $3"
                args.append(token_id)
            count = _count(await conn.execute(sql, *args))
            if count:
                await self._audit(
                    conn,
                    AuditEntry(
                        now,
                        actor,
                        "enrollment_token.revoked",
                        client_id,
                        {"token_id": token_id or "all", "count": count},
                    ),
                )
            return count

        return await self._write(run)

    # API tokens

    async def add_api_token(
        self, name: str, role: Role, token_hash: str, *, now: datetime, actor: str
    ) -> ApiTokenInfo:
        info = ApiTokenInfo(str(uuid.uuid4()), name, role, now, None)

        async def run(conn: Connection) -> ApiTokenInfo:
            try:
                await conn.execute(
                    "INSERT INTO api_tokens (token_id, name, role, token_hash, created_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    info.token_id,
                    name,
                    role,
                    token_hash,
                    now,
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"an active API token named {name!r} already exists") from exc
            await self._audit(
                conn, AuditEntry(now, actor, "api_token.created", name, {"role": role})
            )
            return info

        return await self._write(run)

    async def list_api_tokens(self) -> list[ApiTokenInfo]:
        rows = await self._fetch(
            "SELECT token_id, name, role, created_at, revoked_at FROM api_tokens "
            "ORDER BY created_at, token_id"
        )
        return [ApiTokenInfo(r[0], r[1], cast(Role, r[2]), r[3], r[4]) for r in rows]

    async def revoke_api_token(self, name: str, *, now: datetime, actor: str) -> bool:
        async def run(conn: Connection) -> bool:
            count = _count(
                await conn.execute(
                    "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                    now,
                    name,
                )
            )
            if count:
                await self._audit(conn, AuditEntry(now, actor, "api_token.revoked", name, {}))
            return count > 0

        return await self._write(run)

    async def find_api_token(self, token_hash: str) -> ApiTokenInfo | None:
        r = await self._fetchrow(
            "SELECT token_id, name, role, created_at FROM api_tokens "
            "WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash,
        )
        return None if r is None else ApiTokenInfo(r[0], r[1], cast(Role, r[2]), r[3], None)

    # agents

    async def enroll(
        self, request: EnrollRequestRecord, *, now: datetime, gap_s: float
    ) -> EnrollOutcome:
        gap = timedelta(seconds=gap_s)
        facts = request.facts
        new_machine_id = str(uuid.uuid4())

        async def run(conn: Connection) -> EnrollOutcome:
            client_id = await conn.fetchval(
                "SELECT client_id FROM enrollment_tokens WHERE token_hash = $1 "
                "AND revoked_at IS NULL AND expires_at > $2",
                request.enrollment_token_hash,
                now,
            )
            if client_id is None:
                raise NotFound("the enrollment token is unknown, expired or revoked")
            # A concurrent enrollment of the same new hardware waits here for the other to
            # commit, then takes the re-enrollment path below.
            inserted = await conn.fetchval(
                "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, "
                "components, first_seen, presence_start, last_seen, facts_since, agent_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $8, $9) "
                "ON CONFLICT (client_id, hardware_id) DO NOTHING RETURNING machine_id",
                new_machine_id,
                client_id,
                request.hardware_id,
                facts.hostname,
                facts.os,
                facts.kind,
                facts.components_json,
                now,
                request.agent_id,
            )
            reenrolled = inserted is None
            if inserted is not None:
                machine_id = new_machine_id
                await conn.execute(
                    "INSERT INTO coverage (machine_id, first_seen) VALUES ($1, $2)",
                    machine_id,
                    now,
                )
            else:
                existing = await conn.fetchrow(
                    "SELECT machine_id, offboard_state, last_seen FROM machines "
                    "WHERE client_id = $1 AND hardware_id = $2 FOR UPDATE",
                    client_id,
                    request.hardware_id,
                )
                machine_id = existing[0]
                offboarded = existing[1] == "offboarded"
                await self._close_presence_if_gap(conn, machine_id, now, existing[2], gap)
                if offboarded:
                    # An offboarded machine enrolled again starts a new coverage period.
                    await conn.execute(
                        "INSERT INTO coverage (machine_id, first_seen) VALUES ($1, $2) "
                        "ON CONFLICT DO NOTHING",
                        machine_id,
                        now,
                    )
                await conn.execute(
                    "UPDATE machines SET hostname = $2, os = $3, kind = $4, "
                    "components = CASE WHEN $5::text = '[]' THEN components ELSE $5::text END, "
                    "last_seen = GREATEST(last_seen, $6::timestamptz), agent_id = $7, "
                    "facts_since = $6, "
                    "first_seen = CASE WHEN $8::boolean THEN $6 ELSE first_seen END, "
                    "offboard_state = CASE WHEN $8 THEN NULL ELSE offboard_state END, "
                    "offboarded_at = CASE WHEN $8 THEN NULL ELSE offboarded_at END "
                    "WHERE machine_id = $1",
                    machine_id,
                    facts.hostname,
                    facts.os,
                    facts.kind,
                    facts.components_json,
                    now,
                    request.agent_id,
                    offboarded,
                )
            await conn.execute(
                "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
                "SELECT machine_id, $2, hostname, os, kind, components FROM machines "
                "WHERE machine_id = $1 ON CONFLICT (machine_id, valid_from) DO UPDATE SET "
                "hostname = EXCLUDED.hostname, os = EXCLUDED.os, kind = EXCLUDED.kind, "
                "components = EXCLUDED.components",
                machine_id,
                now,
            )
            await conn.execute(
                "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, "
                "created_at) VALUES ($1, $2, $3, $4, $5)",
                request.agent_id,
                machine_id,
                request.agent_token_hash,
                request.agent_version,
                now,
            )
            await self._audit(
                conn,
                AuditEntry(
                    now,
                    request.agent_id,
                    "machine.reenrolled" if reenrolled else "machine.enrolled",
                    machine_id,
                    {
                        "client_id": client_id,
                        "hostname": facts.hostname,
                        "kind": facts.kind,
                        "hardware_id": request.hardware_id,
                    },
                ),
            )
            if reenrolled:
                # Last: the feed's lock is held until commit, so it is held briefly.
                await self._revoke_agents(conn, machine_id, now, keep_agent_id=request.agent_id)
            return EnrollOutcome(request.agent_id, machine_id, client_id, reenrolled)

        return await self._write(run)

    async def enroll_new_machines_in_bulk(
        self, requests: Sequence[EnrollRequestRecord], *, now: datetime
    ) -> list[EnrollOutcome]:
        """Enroll many machines never seen before in one transaction (fleet set-up, load tests).

        Each is recorded exactly as `enroll` records a first enrollment (machine, coverage,
        facts, agent and audit entry). Hardware already enrolled for its client is a `Conflict`
        and nothing is written; re-enrollment goes through `enroll`.
        """
        if not requests:
            return []

        async def run(conn: Connection) -> list[EnrollOutcome]:
            token_hashes = sorted({r.enrollment_token_hash for r in requests})
            rows = await conn.fetch(
                "SELECT token_hash, client_id FROM enrollment_tokens "
                "WHERE token_hash = ANY($1::text[]) AND revoked_at IS NULL AND expires_at > $2",
                token_hashes,
                now,
            )
            clients = {r[0]: r[1] for r in rows}
            if len(clients) != len(token_hashes):
                raise NotFound("an enrollment token is unknown, expired or revoked")
            machine_ids = [str(uuid.uuid4()) for _ in requests]
            client_ids = [clients[r.enrollment_token_hash] for r in requests]
            inserted = _count(
                await conn.execute(
                    "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, "
                    "kind, components, first_seen, presence_start, last_seen, facts_since, "
                    "agent_id) SELECT m, c, h, hn, o, k, comp, $8, $8, $8, $8, a FROM unnest("
                    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
                    "$7::text[], $9::text[]) AS t(m, c, h, hn, o, k, comp, a) "
                    "ON CONFLICT (client_id, hardware_id) DO NOTHING",
                    machine_ids,
                    client_ids,
                    [r.hardware_id for r in requests],
                    [r.facts.hostname for r in requests],
                    [r.facts.os for r in requests],
                    [r.facts.kind for r in requests],
                    [r.facts.components_json for r in requests],
                    now,
                    [r.agent_id for r in requests],
                )
            )
            if inserted != len(requests):
                raise Conflict(
                    "some of this hardware is already enrolled (or listed twice); "
                    "bulk enrollment is for new machines only"
                )
            await conn.execute(
                "INSERT INTO coverage (machine_id, first_seen) SELECT unnest($1::text[]), $2",
                machine_ids,
                now,
            )
            await conn.execute(
                "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
                "SELECT machine_id, $2, hostname, os, kind, components FROM machines "
                "WHERE machine_id = ANY($1::text[])",
                machine_ids,
                now,
            )
            await conn.execute(
                "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, "
                "created_at) SELECT a, m, t, v, $5 FROM unnest($1::text[], $2::text[], "
                "$3::text[], $4::text[]) AS x(a, m, t, v)",
                [r.agent_id for r in requests],
                machine_ids,
                [r.agent_token_hash for r in requests],
                [r.agent_version for r in requests],
                now,
            )
            await conn.execute(
                "INSERT INTO audit (at, actor, action, target, detail) "
                "SELECT $1, a, 'machine.enrolled', m, d FROM unnest($2::text[], $3::text[], "
                "$4::text[]) AS x(a, m, d)",
                now,
                [r.agent_id for r in requests],
                machine_ids,
                [
                    _detail_json(
                        {
                            "client_id": client_id,
                            "hostname": r.facts.hostname,
                            "kind": r.facts.kind,
                            "hardware_id": r.hardware_id,
                        }
                    )
                    for r, client_id in zip(requests, client_ids, strict=True)
                ],
            )
            return [
                EnrollOutcome(r.agent_id, machine_id, client_id, False)
                for r, machine_id, client_id in zip(requests, machine_ids, client_ids, strict=True)
            ]

        return await self._write(run)

    @staticmethod
    async def _close_presence_if_gap(
        conn: Connection, machine_id: str, seen: datetime, last_seen: datetime, gap: timedelta
    ) -> None:
        """Enrollment of known hardware counts as a heartbeat: it may end a run of presence."""
        if seen - last_seen > gap:
            await conn.execute(
                "INSERT INTO presence (machine_id, start_at, end_at) "
                "SELECT machine_id, presence_start, last_seen FROM machines WHERE machine_id = $1 "
                "ON CONFLICT (machine_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at",
                machine_id,
            )
            await conn.execute(
                "UPDATE machines SET presence_start = $2 WHERE machine_id = $1", machine_id, seen
            )

    @staticmethod
    async def _publish_revocations(conn: Connection, token_hashes: Sequence[str]) -> None:
        """Append to the feed every instance polls.

        The advisory lock is held until this transaction commits: a later writer gets a higher
        `seq` and commits after us, so `seq` values become visible in order.
        """
        if not token_hashes:
            return
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _REVOCATION_LOCK)
        await conn.execute(
            "INSERT INTO revocations (token_hash) SELECT unnest($1::text[])", list(token_hashes)
        )

    async def _revoke_agents(
        self,
        conn: Connection,
        machine_id: str,
        now: datetime,
        *,
        keep_agent_id: str | None = None,
    ) -> None:
        """Revoke every live agent token of a machine (but `keep_agent_id`) and publish it."""
        rows = await conn.fetch(
            "UPDATE agents SET revoked_at = $2 WHERE machine_id = $1 AND revoked_at IS NULL "
            "AND agent_id IS DISTINCT FROM $3 RETURNING token_hash",
            machine_id,
            now,
            keep_agent_id,
        )
        await self._publish_revocations(conn, [r[0] for r in rows])

    async def revocations_since(self, seq: int) -> tuple[list[str], int]:
        if seq < 0:
            top = await self._fetchrow("SELECT COALESCE(MAX(seq), 0) FROM revocations")
            return [], int(top[0])
        rows = await self._fetch(
            "SELECT seq, token_hash FROM revocations WHERE seq > $1 ORDER BY seq", seq
        )
        return [r[1] for r in rows], int(rows[-1][0]) if rows else seq

    async def find_agent(self, token_hash: str) -> AgentIdentity | None:
        row = await self._fetchrow(
            "SELECT a.agent_id, a.machine_id, m.client_id FROM agents a "
            "JOIN machines m ON m.machine_id = a.machine_id "
            "WHERE a.token_hash = $1 AND a.revoked_at IS NULL",
            token_hash,
        )
        return None if row is None else AgentIdentity(row[0], row[1], row[2])

    # The flush of one chunk of machines. The CTEs read the rows as they stood when the
    # statement began; the UPDATE takes `last_seen` and `presence_start` from the row as it is when
    # locked, so a concurrent enrollment is never undone. `newest` keeps a heartbeat flushed late
    # by another instance from overwriting newer facts; `last_seen` never moves backwards.
    _APPLY_SQL = """
        WITH b AS (
            SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[],
                                 $4::text[], $5::text[], $6::text[], $7::text[])
                AS b(machine_id, first_at, last_at, hostname, os, kind, components)
        ),
        cur AS MATERIALIZED (
            SELECT m.machine_id, m.presence_start, m.last_seen, b.first_at, b.last_at,
                   b.first_at - m.last_seen > $8::interval AS new_run,
                   b.last_at >= m.last_seen AS newest,
                   m.hostname <> COALESCE(b.hostname, m.hostname)
                       OR m.os <> COALESCE(b.os, m.os)
                       OR m.kind <> COALESCE(b.kind, m.kind)
                       OR m.components <> b.components AS changed,
                   COALESCE(b.hostname, m.hostname) AS hostname,
                   COALESCE(b.os, m.os) AS os,
                   COALESCE(b.kind, m.kind) AS kind,
                   b.components
            FROM machines m JOIN b ON b.machine_id = m.machine_id
        ),
        closed_runs AS (
            INSERT INTO presence (machine_id, start_at, end_at)
            SELECT machine_id, presence_start, last_seen FROM cur WHERE new_run
            ON CONFLICT (machine_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at
        ),
        changed_facts AS (
            INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components)
            SELECT machine_id, last_at, hostname, os, kind, components FROM cur
            WHERE newest AND changed
            ON CONFLICT (machine_id, valid_from) DO UPDATE SET hostname = EXCLUDED.hostname,
                os = EXCLUDED.os, kind = EXCLUDED.kind, components = EXCLUDED.components
        )
        UPDATE machines m SET
            presence_start = CASE WHEN cur.new_run THEN cur.first_at
                                  ELSE LEAST(m.presence_start, cur.first_at) END,
            last_seen = GREATEST(m.last_seen, cur.last_at),
            hostname = CASE WHEN cur.newest THEN cur.hostname ELSE m.hostname END,
            os = CASE WHEN cur.newest THEN cur.os ELSE m.os END,
            kind = CASE WHEN cur.newest THEN cur.kind ELSE m.kind END,
            components = CASE WHEN cur.newest THEN cur.components ELSE m.components END,
            facts_since = CASE WHEN cur.newest AND cur.changed THEN cur.last_at
                               ELSE m.facts_since END
        FROM cur WHERE m.machine_id = cur.machine_id
    """

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None:
        if not batch:
            return
        gap = timedelta(seconds=gap_s)

        async def run(conn: Connection) -> None:
            # Flushes of all instances take turns: two never hold rows the other waits for.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _FLUSH_LOCK)
            for start in range(0, len(batch), _FLUSH_CHUNK):
                chunk = batch[start : start + _FLUSH_CHUNK]
                await conn.execute(
                    self._APPLY_SQL,
                    [r.machine_id for r in chunk],
                    [r.first_at for r in chunk],
                    [r.last_at for r in chunk],
                    [r.hostname for r in chunk],
                    [r.os for r in chunk],
                    [r.kind for r in chunk],
                    [r.components_json for r in chunk],
                    gap,
                )

        await self._write(run)

    async def record_events(
        self, identity: AgentIdentity, events: Sequence[AgentEvent], *, now: datetime
    ) -> int:
        if not events:
            return 0

        async def run(conn: Connection) -> int:
            return int(
                await conn.fetchval(
                    "WITH added AS (INSERT INTO agent_events (machine_id, event_id, agent_id, at, "
                    "received_at, type, detail) SELECT $1, e, $2, a, $3, t, d FROM unnest("
                    "$4::text[], $5::timestamptz[], $6::text[], $7::text[]) AS x(e, a, t, d) "
                    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM added",
                    identity.machine_id,
                    identity.agent_id,
                    now,
                    [e.event_id for e in events],
                    [e.at for e in events],
                    [e.type for e in events],
                    [e.detail_json for e in events],
                )
            )

        return await self._write(run)

    async def list_events(self, machine_id: str, *, limit: int) -> list[AgentEvent]:
        rows = await self._fetch(
            "SELECT event_id, at, type, detail FROM agent_events WHERE machine_id = $1 "
            "ORDER BY at DESC, event_id LIMIT $2",
            machine_id,
            limit,
        )
        return [AgentEvent(r[0], r[1], r[2], r[3]) for r in rows]

    # machines and inventory

    _MACHINE_COLUMNS = (
        "machine_id, client_id, hardware_id, hostname, os, kind, first_seen, last_seen, "
        "components, offboard_state, offboarded_at, agent_id"
    )

    @staticmethod
    def _machine(r: Any) -> MachineRecord:
        return MachineRecord(
            machine_id=r[0],
            client_id=r[1],
            hardware_id=r[2],
            hostname=r[3],
            os=r[4],
            kind=r[5],
            first_seen=r[6],
            last_seen=r[7],
            components_json=r[8],
            offboard_state=cast(OffboardState | None, r[9]),
            offboarded_at=r[10],
            agent_id=r[11],
        )

    async def get_machine(self, machine_id: str) -> MachineRecord | None:
        row = await self._fetchrow(
            f"SELECT {self._MACHINE_COLUMNS} FROM machines WHERE machine_id = $1", machine_id
        )
        return None if row is None else self._machine(row)

    @staticmethod
    def _state_condition(state: MachineState, windows: StateWindows, p: _Params) -> str:
        if state in ("offboard_pending", "offboarded", "offboard_failed"):
            return f"offboard_state = {p(state)}"
        if state == "expired":
            return f"offboard_state IS NULL AND last_seen <= {p(windows.expired_before)}"
        if state == "online":
            return f"offboard_state IS NULL AND last_seen >= {p(windows.online_since)}"
        return (
            f"offboard_state IS NULL AND last_seen < {p(windows.online_since)} "
            f"AND last_seen > {p(windows.expired_before)}"
        )

    def _machine_conditions(
        self,
        p: _Params,
        client_id: str | None,
        kind: str | None,
        hostname_contains: str | None,
        state: MachineState | None,
        windows: StateWindows,
    ) -> list[str]:
        """The filters the API's machine list and the web pages share."""
        conditions: list[str] = []
        if client_id is not None:
            conditions.append(f"client_id = {p(client_id)}")
        if kind is not None:
            conditions.append(f"kind = {p(kind)}")
        if hostname_contains:
            conditions.append(f"strpos(lower(hostname), lower({p(hostname_contains)})) > 0")
        if state is not None:
            conditions.append(self._state_condition(state, windows, p))
        return conditions

    async def list_machines(
        self, machine_filter: MachineFilter, windows: StateWindows
    ) -> list[MachineRecord]:
        p = _Params()
        f = machine_filter
        conditions = self._machine_conditions(
            p, f.client_id, f.kind, f.hostname_contains, f.state, windows
        )
        if f.after_machine_id is not None:
            conditions.append(f"machine_id > {p(f.after_machine_id)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT {self._MACHINE_COLUMNS} FROM machines {where} "
            f"ORDER BY machine_id LIMIT {p(f.limit)}"
        )
        return [self._machine(r) for r in await self._fetch(sql, *p.values)]

    async def count_machines_by_state(self, windows: StateWindows) -> dict[MachineState, int]:
        rows = await self._fetch(
            "SELECT CASE WHEN offboard_state IS NOT NULL THEN offboard_state "
            "WHEN last_seen <= $1 THEN 'expired' WHEN last_seen >= $2 THEN 'online' "
            "ELSE 'offline' END AS state, COUNT(*) FROM machines GROUP BY 1",
            windows.expired_before,
            windows.online_since,
        )
        counts: dict[MachineState, int] = dict.fromkeys(MACHINE_STATES, 0)
        for state, count in rows:
            counts[cast(MachineState, state)] = int(count)
        return counts

    # Each machine as it stood at $1. The machine row holds the current coverage period
    # (`first_seen`, `offboarded_at`), the current run of presence (`presence_start` ..
    # `last_seen`) and the facts in force since `facts_since`: when each began before $1, the row
    # answers alone. Only what changed after $1 is looked up in the history tables (a one-time
    # filter in each lateral subquery skips the lookup otherwise). Rows come in storage order:
    # one sequential pass, whatever the fleet's size.
    _INVENTORY_SQL = """
        SELECT m.machine_id, m.client_id,
            CASE WHEN m.facts_since <= $1 THEN m.hostname ELSE f.hostname END AS hostname,
            CASE WHEN m.facts_since <= $1 THEN m.kind ELSE f.kind END AS kind,
            CASE WHEN m.first_seen < $1 THEN m.first_seen ELSE c.first_seen END AS first_seen,
            CASE WHEN m.presence_start <= $1 THEN LEAST(m.last_seen, $1)
                 ELSE LEAST(p.end_at, $1) END AS last_seen,
            CASE WHEN m.first_seen < $1
                 THEN CASE WHEN m.offboarded_at <= $1 THEN m.offboarded_at END
                 ELSE CASE WHEN c.offboarded_at <= $1 THEN c.offboarded_at END END
                AS offboarded_at,
            CASE WHEN m.facts_since <= $1 THEN m.components ELSE f.components END AS components
        FROM machines m
        LEFT JOIN LATERAL (
            SELECT first_seen, offboarded_at FROM coverage
            WHERE m.first_seen >= $1
              AND coverage.machine_id = m.machine_id AND coverage.first_seen < $1
            ORDER BY coverage.first_seen DESC LIMIT 1) c ON true
        LEFT JOIN LATERAL (
            SELECT hostname, kind, components FROM facts
            WHERE m.facts_since > $1
              AND facts.machine_id = m.machine_id AND facts.valid_from <= $1
            ORDER BY facts.valid_from DESC LIMIT 1) f ON true
        LEFT JOIN LATERAL (
            SELECT end_at FROM presence
            WHERE m.presence_start > $1
              AND presence.machine_id = m.machine_id AND presence.start_at <= $1
            ORDER BY presence.start_at DESC LIMIT 1) p ON true
        WHERE (m.first_seen < $1 OR c.first_seen IS NOT NULL)
          AND (m.facts_since <= $1 OR f.hostname IS NOT NULL)
    """

    @staticmethod
    def _inventory_json_sql(rows_sql: str) -> str:
        """Each row of `rows_sql` as its JSON object, written by the server process, so the
        collector handles one string per machine rather than eight typed values. One `concat`
        builds it (one allocation, where each `||` copied the string so far). Machine and client
        ids are UUIDs the collector made and kind is `pc` or `server`: only the hostname needs
        escaping, and components are stored as JSON. Instants are written as the collector writes
        them everywhere; most machines were present at $1, whose text is $2. Each object comes as
        UTF-8 bytes (bytea), which the collector joins and sends without decoding them first."""
        return f"""
            SELECT convert_to(concat('{{"machine_id":"', i.machine_id,
                '","client_id":"', i.client_id,
                '","hostname":', to_json(i.hostname), ',"kind":"', i.kind,
                '","first_seen":', {_json_instant("i.first_seen")},
                ',"last_seen":', CASE WHEN i.last_seen = $1 THEN $2::text
                                 ELSE {_json_instant("i.last_seen")} END,
                ',"offboarded_at":', COALESCE({_json_instant("i.offboarded_at")}, 'null'),
                ',"components":', i.components, '}}'), 'UTF8')
            FROM ({rows_sql}) i
        """

    async def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncGenerator[bytes, None]:
        """Batches of the inventory, from one consistent snapshot.

        Two server processes compute it, each over half of the table (by storage position, a
        TID range scan), in two transactions that share one exported snapshot; each fetches its
        next batch while the caller writes out the current one, so the query's time overlaps
        with the caller's. Rows come in storage order: one sequential pass, whatever the size.
        """
        self._check_open()
        as_of_json = msgspec.json.encode(as_of).decode()
        parts = min(_INVENTORY_STREAMS, self._pool.get_max_size())
        async with contextlib.AsyncExitStack() as stack:
            cursors = []
            snapshot = ""
            pages = 0
            for part in range(parts):
                conn = await stack.enter_async_context(self._pool.acquire())
                await stack.enter_async_context(
                    conn.transaction(isolation="repeatable_read", readonly=True)
                )
                if part == 0:
                    snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
                    if not _SNAPSHOT_ID.fullmatch(snapshot):
                        raise StoreError(f"unexpected snapshot id {snapshot!r}")
                    pages = int(
                        await conn.fetchval(
                            "SELECT pg_relation_size('machines') / "
                            "current_setting('block_size')::bigint"
                        )
                    )
                else:
                    await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                rows_sql, bounds = self._INVENTORY_SQL, []
                if parts > 1:
                    bounds.append((pages * part // parts, 0))
                    rows_sql += " AND m.ctid >= $3::tid"
                if part < parts - 1:
                    bounds.append((pages * (part + 1) // parts, 0))
                    rows_sql += " AND m.ctid < $4::tid"
                cursors.append(
                    await conn.cursor(
                        self._inventory_json_sql(rows_sql), as_of, as_of_json, *bounds
                    )
                )
            ahead: dict[asyncio.Future[list[Any]], Any] = {
                asyncio.ensure_future(cursor.fetch(batch_size)): cursor for cursor in cursors
            }
            try:
                while ahead:
                    done, _ = await asyncio.wait(ahead, return_when=asyncio.FIRST_COMPLETED)
                    for fetched in done:
                        cursor = ahead.pop(fetched)
                        rows = fetched.result()
                        if len(rows) == batch_size:
                            ahead[asyncio.ensure_future(cursor.fetch(batch_size))] = cursor
                        if rows:
                            yield b",".join([r[0] for r in rows])
            finally:
                # Abandoned mid-stream: let the fetches in flight finish before the
                # transactions end and the connections go back to the pool.
                for fetching in ahead:
                    fetching.cancel()
                for fetching in ahead:
                    with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                        await fetching

    def iter_inventory(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncIterator[list[InventoryRecord]]:
        return records_from_json(self.iter_inventory_json(as_of, batch_size=batch_size))

    async def expire_machines(self, windows: StateWindows) -> list[str]:
        now = windows.now

        async def run(conn: Connection) -> list[str]:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _SWEEP_LOCK):
                return []  # another instance is sweeping right now; it records them
            # No flush runs meanwhile, so the sweep and a flush never wait for each other's rows.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _FLUSH_LOCK)
            rows = await conn.fetch(
                "WITH due AS (SELECT machine_id FROM machines WHERE last_seen <= $2 "
                "AND (offboard_state IS NULL OR offboard_state <> 'offboarded') "
                "AND (expired_at IS NULL OR expired_at <= last_seen) "
                "ORDER BY machine_id FOR UPDATE) "
                "UPDATE machines m SET expired_at = m.last_seen + $1::interval FROM due "
                "WHERE m.machine_id = due.machine_id "
                "RETURNING m.machine_id, m.client_id, m.hostname, m.last_seen, m.offboard_state",
                EXPIRY,
                windows.expired_before,
            )
            rows = sorted(rows, key=lambda r: r[0])
            if not rows:
                return []
            await conn.execute(
                "INSERT INTO audit (at, actor, action, target, detail) "
                "SELECT $1, 'system', 'machine.expired', t, d "
                "FROM unnest($2::text[], $3::text[]) AS x(t, d)",
                now,
                [r[0] for r in rows],
                [
                    _detail_json(
                        {
                            "client_id": client_id,
                            "hostname": hostname,
                            "last_seen": format_instant(last_seen),
                            "expired_at": format_instant(last_seen + EXPIRY),
                            "offboard_state": offboard_state,
                        }
                    )
                    for _, client_id, hostname, last_seen, offboard_state in rows
                ],
            )
            return [r[0] for r in rows]

        return await self._write(run)

    # remote commands (offboarding)

    _COMMAND_COLUMNS = (
        "command_id, type, machine_id, client_id, agent_id, sequence, state, issuer, reason, "
        "ticket, created_at, delivered_at, delivery_count, completed_at, result_status, "
        "result_reason, steps, rejections"
    )

    @staticmethod
    def _command(r: Any) -> CommandRecord:
        return CommandRecord(
            command_id=r[0],
            type=r[1],
            machine_id=r[2],
            client_id=r[3],
            agent_id=r[4],
            sequence=int(r[5]),
            state=cast(CommandState, r[6]),
            issuer=r[7],
            reason=r[8],
            ticket=r[9],
            created_at=r[10],
            delivered_at=r[11],
            delivery_count=int(r[12]),
            completed_at=r[13],
            result_status=r[14],
            result_reason=r[15],
            steps_json=r[16],
            rejections=int(r[17]),
        )

    async def _command_by_id(
        self, conn: Connection, command_id: str, *, lock: bool = False
    ) -> CommandRecord | None:
        row = await conn.fetchrow(
            f"SELECT {self._COMMAND_COLUMNS} FROM commands WHERE command_id = $1"
            + (" FOR UPDATE" if lock else ""),
            command_id,
        )
        return None if row is None else self._command(row)

    @staticmethod
    async def _next_sequence(conn: Connection, agent_id: str) -> int:
        """Sequence numbers are per agent and only grow (the agent's row is locked meanwhile)."""
        sequence = await conn.fetchval(
            "UPDATE agents SET command_seq = command_seq + 1 WHERE agent_id = $1 "
            "RETURNING command_seq",
            agent_id,
        )
        if sequence is None:
            raise NotFound(f"no agent {agent_id!r}")
        return int(sequence)

    async def request_offboard(
        self, request: OffboardRequestRecord, *, now: datetime
    ) -> tuple[CommandRecord, bool]:
        command_id = str(uuid.uuid4())

        async def run(conn: Connection) -> tuple[CommandRecord, bool]:
            # The machine's row lock makes concurrent requests (through any instance) queue up:
            # the first creates the command, the others answer with it.
            machine = await conn.fetchrow(
                "SELECT client_id, agent_id, offboard_state, hostname FROM machines "
                "WHERE machine_id = $1 FOR UPDATE",
                request.machine_id,
            )
            if machine is None:
                raise NotFound("no machine has that id")
            client_id, agent_id, offboard_state, hostname = machine
            if offboard_state == "offboarded":
                raise Conflict("the machine is already offboarded")
            pending = await conn.fetchrow(
                f"SELECT {self._COMMAND_COLUMNS} FROM commands WHERE machine_id = $1 "
                "AND state = 'offboard_pending' ORDER BY created_at DESC LIMIT 1",
                request.machine_id,
            )
            if pending is not None:
                return self._command(pending), False
            sequence = await self._next_sequence(conn, agent_id)
            await conn.execute(
                "INSERT INTO commands (command_id, type, machine_id, client_id, agent_id, "
                "sequence, state, issuer, reason, ticket, created_at) "
                "VALUES ($1, 'offboard', $2, $3, $4, $5, 'offboard_pending', $6, $7, $8, $9)",
                command_id,
                request.machine_id,
                client_id,
                agent_id,
                sequence,
                request.issuer,
                request.reason,
                request.ticket,
                now,
            )
            await conn.execute(
                "UPDATE machines SET offboard_state = 'offboard_pending' WHERE machine_id = $1",
                request.machine_id,
            )
            await self._audit(
                conn,
                AuditEntry(
                    now,
                    request.issuer,
                    "offboard.requested",
                    request.machine_id,
                    {
                        "command_id": command_id,
                        "reason": request.reason,
                        "ticket": request.ticket,
                        "client_id": client_id,
                        "hostname": hostname,
                    },
                ),
            )
            command = await self._command_by_id(conn, command_id)
            assert command is not None
            return command, True

        return await self._write(run)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        return await self._read(lambda conn: self._command_by_id(conn, command_id))

    async def list_commands(self, command_filter: CommandFilter) -> list[CommandRecord]:
        p = _Params()
        conditions: list[str] = []
        f = command_filter
        if f.state is not None:
            conditions.append(f"state = {p(f.state)}")
        if f.machine_id is not None:
            conditions.append(f"machine_id = {p(f.machine_id)}")
        if f.after_command_id is not None:
            conditions.append(f"command_id > {p(f.after_command_id)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT {self._COMMAND_COLUMNS} FROM commands {where} "
            f"ORDER BY command_id LIMIT {p(f.limit)}"
        )
        return [self._command(r) for r in await self._fetch(sql, *p.values)]

    async def machines_with_open_commands(self) -> set[str]:
        rows = await self._fetch(
            "SELECT DISTINCT machine_id FROM commands WHERE state = 'offboard_pending'"
        )
        return {r[0] for r in rows}

    async def commands_for_delivery(
        self, identity: AgentIdentity, *, now: datetime
    ) -> list[CommandRecord]:
        async def run(conn: Connection) -> list[CommandRecord]:
            # Locked: two instances handing out the same command take turns, so it is rebound
            # and first-delivered once.
            rows = await conn.fetch(
                f"SELECT {self._COMMAND_COLUMNS} FROM commands WHERE machine_id = $1 "
                "AND state = 'offboard_pending' ORDER BY sequence, command_id FOR UPDATE",
                identity.machine_id,
            )
            delivered = []
            for row in rows:
                command = self._command(row)
                if command.agent_id != identity.agent_id:
                    # The machine was enrolled again: the command now goes to its new agent,
                    # under that agent's own sequence.
                    await conn.execute(
                        "UPDATE commands SET agent_id = $1, sequence = $2 WHERE command_id = $3",
                        identity.agent_id,
                        await self._next_sequence(conn, identity.agent_id),
                        command.command_id,
                    )
                await conn.execute(
                    "UPDATE commands SET delivery_count = delivery_count + 1, "
                    "delivered_at = COALESCE(delivered_at, $1) WHERE command_id = $2",
                    now,
                    command.command_id,
                )
                if command.delivery_count == 0:
                    await self._audit(
                        conn,
                        AuditEntry(
                            now,
                            "system",
                            "command.delivered",
                            command.machine_id,
                            {"command_id": command.command_id, "agent_id": identity.agent_id},
                        ),
                    )
                refreshed = await self._command_by_id(conn, command.command_id)
                assert refreshed is not None
                delivered.append(refreshed)
            return delivered

        return await self._write(run)

    async def record_command_result(
        self, identity: AgentIdentity, result: CommandResultRecord, *, now: datetime
    ) -> CommandRecord:
        async def run(conn: Connection) -> CommandRecord:
            # Locked: the same result arriving through two instances lands once.
            command = await self._command_by_id(conn, result.command_id, lock=True)
            if command is None:
                raise NotFound("no command has that id")
            if command.agent_id != identity.agent_id or command.machine_id != identity.machine_id:
                raise NotOwner("the command belongs to another agent")
            detail: dict[str, Any] = {
                "command_id": command.command_id,
                "status": result.status,
                "reason": result.reason,
            }
            if result.status == "rejected":
                # A refusal is a security event; it never ends the command, so a forged
                # command cannot cancel the genuine one with the same id.
                await conn.execute(
                    "UPDATE commands SET rejections = rejections + 1 WHERE command_id = $1",
                    command.command_id,
                )
                await self._audit(
                    conn,
                    AuditEntry(
                        now, identity.agent_id, "command.rejected", command.machine_id, detail
                    ),
                )
            elif command.state == "offboarded":
                pass  # a repeated final report: already recorded
            elif result.status == "succeeded":
                await conn.execute(
                    "UPDATE commands SET state = 'offboarded', completed_at = $1, "
                    "result_status = $2, result_reason = $3, steps = $4 WHERE command_id = $5",
                    now,
                    result.status,
                    result.reason,
                    result.steps_json,
                    command.command_id,
                )
                await conn.execute(
                    "UPDATE machines SET offboard_state = 'offboarded', offboarded_at = $1 "
                    "WHERE machine_id = $2",
                    now,
                    command.machine_id,
                )
                await conn.execute(
                    "UPDATE coverage SET offboarded_at = $1 WHERE machine_id = $2 AND "
                    "first_seen = (SELECT first_seen FROM machines WHERE machine_id = $2)",
                    now,
                    command.machine_id,
                )
                await self._audit(
                    conn,
                    AuditEntry(
                        now, identity.agent_id, "offboard.completed", command.machine_id, detail
                    ),
                )
                # The final report is in: the agent's token has done its last job.
                await self._revoke_agents(conn, command.machine_id, now)
            else:
                await conn.execute(
                    "UPDATE commands SET state = 'offboard_failed', completed_at = $1, "
                    "result_status = $2, result_reason = $3, steps = $4 WHERE command_id = $5",
                    now,
                    result.status,
                    result.reason,
                    result.steps_json,
                    command.command_id,
                )
                await conn.execute(
                    "UPDATE machines SET offboard_state = 'offboard_failed' "
                    "WHERE machine_id = $1 AND offboard_state = 'offboard_pending'",
                    command.machine_id,
                )
                failed = [s for s in json.loads(result.steps_json) if s.get("status") != "ok"]
                await self._audit(
                    conn,
                    AuditEntry(
                        now,
                        identity.agent_id,
                        "offboard.failed",
                        command.machine_id,
                        {**detail, "failed_steps": failed},
                    ),
                )
            refreshed = await self._command_by_id(conn, command.command_id)
            assert refreshed is not None
            return refreshed

        try:
            return await self._write(run)
        except NotOwner:
            await self.add_audit(
                AuditEntry(
                    now,
                    identity.agent_id,
                    "command.result_refused",
                    result.command_id,
                    {
                        "reason": "the command belongs to another agent",
                        "machine_id": identity.machine_id,
                        "status": result.status,
                    },
                )
            )
            raise

    async def licence_exposure(
        self, windows: StateWindows, *, pending_before: datetime
    ) -> tuple[list[ExposureRow], list[ExposureRow]]:
        def row(r: Any) -> ExposureRow:
            return ExposureRow(
                r[0], r[1], r[2], r[3], r[4], cast(OffboardState | None, r[5]), r[6], r[7]
            )

        async def run(conn: Connection) -> tuple[list[ExposureRow], list[ExposureRow]]:
            expired = await conn.fetch(
                "SELECT m.machine_id, m.client_id, m.hostname, m.kind, m.last_seen, "
                "m.offboard_state, c.command_id, c.created_at FROM machines m "
                "LEFT JOIN commands c ON c.machine_id = m.machine_id "
                "AND c.state = 'offboard_pending' "
                "WHERE m.last_seen <= $1 AND (m.offboard_state IS NULL "
                "OR m.offboard_state <> 'offboarded') ORDER BY m.client_id, m.last_seen",
                windows.expired_before,
            )
            pending = await conn.fetch(
                "SELECT m.machine_id, m.client_id, m.hostname, m.kind, m.last_seen, "
                "m.offboard_state, c.command_id, c.created_at FROM commands c "
                "JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_pending' AND c.created_at <= $1 "
                "ORDER BY c.created_at",
                pending_before,
            )
            return [row(r) for r in expired], [row(r) for r in pending]

        return await self._read(run)

    # audit

    async def add_audit(self, entry: AuditEntry) -> None:
        async def run(conn: Connection) -> None:
            await self._audit(conn, entry)

        await self._write(run)

    async def list_audit(self, audit_filter: AuditFilter) -> list[tuple[int, AuditEntry]]:
        p = _Params()
        conditions: list[str] = []
        f = audit_filter
        for column, value in (("actor", f.actor), ("action", f.action), ("target", f.target)):
            if value is not None:
                conditions.append(f"{column} = {p(value)}")
        if f.since is not None:
            conditions.append(f"at >= {p(f.since)}")
        if f.before_id is not None:
            conditions.append(f"id < {p(f.before_id)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT id, at, actor, action, target, detail FROM audit {where} "
            f"ORDER BY id DESC LIMIT {p(f.limit)}"
        )
        return [
            (r[0], AuditEntry(r[1], r[2], r[3], r[4], json.loads(r[5])))
            for r in await self._fetch(sql, *p.values)
        ]

    # aggregates and pages for the web pages

    # Covered: components reported and every required one running. Statuses are only running,
    # stopped or missing, so a list mentioning neither of the other two needs no JSON parsing.
    _COVERED_SQL = (
        "CASE WHEN components = '[]' THEN 0 "
        "WHEN strpos(components, 'stopped') = 0 AND strpos(components, 'missing') = 0 THEN 1 "
        "WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(components::jsonb) j "
        "WHERE COALESCE((j->>'required')::boolean, true) "
        "AND j->>'status' <> 'running') THEN 0 ELSE 1 END"
    )

    async def client_overview(
        self, windows: StateWindows, *, stale_before: datetime, pending_before: datetime
    ) -> list[ClientOverview]:
        # $1 online since, $2 expired before, $3 stale before
        in_inventory = "COALESCE(offboard_state, '') <> 'offboarded' AND last_seen > $2"
        machines_sql = (
            "SELECT client_id, "
            "count(*) FILTER (WHERE offboard_state IS NULL AND last_seen >= $1), "
            "count(*) FILTER (WHERE offboard_state IS NULL AND last_seen < $1 "
            "AND last_seen > $2), "
            "count(*) FILTER (WHERE offboard_state IS NULL AND last_seen <= $2), "
            "count(*) FILTER (WHERE offboard_state = 'offboard_pending'), "
            "count(*) FILTER (WHERE offboard_state = 'offboard_failed'), "
            "count(*) FILTER (WHERE offboard_state = 'offboarded'), "
            f"count(*) FILTER (WHERE {in_inventory}), "
            f"count(*) FILTER (WHERE {in_inventory} AND ({self._COVERED_SQL}) = 1), "
            "count(*) FILTER (WHERE offboard_state IS NULL AND last_seen <= $3 "
            "AND last_seen > $2), "
            "count(*) FILTER (WHERE COALESCE(offboard_state, '') <> 'offboarded' "
            "AND last_seen <= $2) "
            "FROM machines GROUP BY client_id"
        )
        states: tuple[MachineState, ...] = (
            "online",
            "offline",
            "expired",
            "offboard_pending",
            "offboard_failed",
            "offboarded",
        )

        async def run(conn: Connection) -> list[ClientOverview]:
            clients = await conn.fetch("SELECT client_id, name FROM clients ORDER BY name")
            counts = {
                r[0]: tuple(int(v) for v in r[1:])
                for r in await conn.fetch(
                    machines_sql, windows.online_since, windows.expired_before, stale_before
                )
            }
            overdue = {
                r[0]: int(r[1])
                for r in await conn.fetch(
                    "SELECT client_id, count(*) FROM commands WHERE state = 'offboard_pending' "
                    "AND created_at <= $1 GROUP BY client_id",
                    pending_before,
                )
            }
            rows = []
            for client_id, name in clients:
                c = counts.get(client_id, (0,) * 10)
                rows.append(
                    ClientOverview(
                        client_id=client_id,
                        name=name,
                        by_state=dict(zip(states, c[:6], strict=True)),
                        in_inventory=c[6],
                        covered=c[7],
                        stale=c[8],
                        exposed=c[9],
                        pending_overdue=overdue.get(client_id, 0),
                    )
                )
            return rows

        return await self._read(run)

    def _component_condition(self, query: MachineQuery, p: _Params) -> str:
        status, name = query.component_status, query.component
        elements = "SELECT 1 FROM jsonb_array_elements(components::jsonb) j"
        if status is None:
            if name is None:
                return ""
            # a name alone: machines reporting that component at all
            return f"EXISTS ({elements} WHERE j->>'name' = {p(name)})"
        if name is None:
            if status == "covered":
                return f"({self._COVERED_SQL}) = 1"
            if status == "gap":
                return f"({self._COVERED_SQL}) = 0"
            return f"EXISTS ({elements} WHERE j->>'status' = {p(status)})"
        named = f"{elements} WHERE j->>'name' = {p(name)}"
        if status == "missing":
            return f"NOT EXISTS ({named} AND j->>'status' <> 'missing')"
        if status == "gap":
            return f"NOT EXISTS ({named} AND j->>'status' = 'running')"
        wanted = "running" if status == "covered" else status
        return f"EXISTS ({named} AND j->>'status' = {p(wanted)})"

    async def machine_page(self, query: MachineQuery, windows: StateWindows) -> MachinePage:
        p = _Params()
        q = query
        conditions = self._machine_conditions(
            p, q.client_id, q.kind, q.hostname_contains, q.state, windows
        )
        if q.seen_before is not None:
            conditions.append(f"last_seen <= {p(q.seen_before)}")
        if q.exposed:
            conditions.append(
                "COALESCE(offboard_state, '') <> 'offboarded' "
                f"AND last_seen <= {p(windows.expired_before)}"
            )
        condition = self._component_condition(q, p)
        if condition:
            conditions.append(condition)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        # Case folded on ASCII letters only, then bytewise: SQLite's NOCASE order.
        order = (
            "last_seen, machine_id"
            if q.sort == "last_seen"
            else 'lower(hostname COLLATE "C"), machine_id'
        )
        filters = list(p.values)
        page_sql = (
            f"SELECT {self._MACHINE_COLUMNS} FROM machines {where} "
            f"ORDER BY {order} LIMIT {p(q.limit)} OFFSET {p(q.offset)}"
        )

        async def run(conn: Connection) -> MachinePage:
            total = await conn.fetchval(f"SELECT count(*) FROM machines {where}", *filters)
            rows = await conn.fetch(page_sql, *p.values)
            return MachinePage(machines=[self._machine(r) for r in rows], total=int(total))

        return await self._read(run)

    async def presence_history(self, machine_id: str, *, since: datetime) -> PresenceHistory:
        async def run(conn: Connection) -> PresenceHistory:
            runs = [
                PresenceRun(r[0], r[1])
                for r in await conn.fetch(
                    "SELECT start_at, end_at FROM presence WHERE machine_id = $1 "
                    "AND end_at >= $2 ORDER BY start_at",
                    machine_id,
                    since,
                )
            ]
            current = await conn.fetchrow(
                "SELECT presence_start, last_seen FROM machines WHERE machine_id = $1",
                machine_id,
            )
            if current is not None and current[1] >= since:
                runs.append(PresenceRun(current[0], current[1]))
            coverage = [
                CoveragePeriod(r[0], r[1])
                for r in await conn.fetch(
                    "SELECT first_seen, offboarded_at FROM coverage WHERE machine_id = $1 "
                    "ORDER BY first_seen",
                    machine_id,
                )
            ]
            return PresenceHistory(runs=runs, coverage=coverage)

        return await self._read(run)

    async def offboards_needing_attention(
        self, *, pending_before: datetime, limit: int
    ) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
        columns = ", ".join(f"c.{name.strip()}" for name in self._COMMAND_COLUMNS.split(","))

        async def run(
            conn: Connection,
        ) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
            pending = await conn.fetch(
                f"SELECT {columns}, m.hostname FROM commands c "
                "JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_pending' AND c.created_at <= $1 "
                "ORDER BY c.created_at LIMIT $2",
                pending_before,
                limit,
            )
            failed = await conn.fetch(
                f"SELECT {columns}, m.hostname FROM commands c "
                "JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_failed' AND m.offboard_state = 'offboard_failed' "
                "AND NOT EXISTS (SELECT 1 FROM commands later WHERE later.machine_id = "
                "c.machine_id AND later.created_at > c.created_at) "
                "ORDER BY c.completed_at DESC LIMIT $1",
                limit,
            )
            return (
                [OffboardAttention(self._command(r[:-1]), r[-1]) for r in pending],
                [OffboardAttention(self._command(r[:-1]), r[-1]) for r in failed],
            )

        return await self._read(run)
