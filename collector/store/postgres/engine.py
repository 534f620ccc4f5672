"""The engine for fleets that outgrow one machine: PostgreSQL through an asyncpg pool.

Several collector processes or hosts may share one database, so every write is safe to run
concurrently with the same write from another instance: rows a rule decides on are read `FOR
UPDATE` (the dialect adds it), work that must not run twice at once takes a transaction-level
advisory lock (`Tx.lock`: last-seen flushes take turns, the expiry sweep runs in one instance at a
time, the revocation feed's sequence becomes visible in order), and migrations run under an
advisory lock, so instances starting together migrate once. A transaction PostgreSQL aborts for a
deadlock or a serialization conflict is run again whole.

Reads that stream (the inventory) use server-side cursors inside read-only, repeatable-read
transactions on one exported snapshot.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from collector.store.postgres import flush, inventory
from collector.store.postgres.dialect import POSTGRES
from collector.store.postgres.schema import MIGRATIONS
from collector.store.records import HeartbeatRecord, InvalidText, StoreError
from collector.store.sql import (
    LOCK_MIGRATIONS,
    Dialect,
    Row,
    StoreUnavailable,
    Tx,
    UniqueViolation,
    numbered_placeholders,
)

T = TypeVar("T")
Connection = Any  # asyncpg.Connection (asyncpg ships no type information)

_RETRIES = 5
_POOL_MIN = 1
_POOL_MAX = 10
_ACQUIRE_TIMEOUT_S = 10

_sql = functools.lru_cache(maxsize=2048)(numbered_placeholders)


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


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Driver errors as what they mean for the caller."""
    try:
        yield
    except asyncpg.CharacterNotInRepertoireError as exc:
        # A NUL character in text sent (a name searched for, a form field): refused before
        # anything is written, and answered with a 400.
        raise InvalidText("text with a NUL character cannot be stored or searched for") from exc
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc
    except (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.InsufficientResourcesError,
        asyncpg.OperatorInterventionError,
        asyncpg.LockNotAvailableError,
        asyncpg.ReadOnlySQLTransactionError,
    ) as exc:
        raise StoreUnavailable(f"PostgreSQL: {exc}") from exc


async def keep_session(conn: Connection) -> None:
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
        reset=keep_session,
        timeout=10,
        # JIT compilation costs more than it saves on these short, index-driven queries.
        # A lock held elsewhere fails the statement after 10 s (answered 503) instead of
        # holding the request, or the flush, indefinitely.
        server_settings={"application_name": "rmm-collector", "jit": "off", "lock_timeout": "10s"},
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


def _count(status: str) -> int:
    """Rows touched, from a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresTx:
    dialect: Dialect = POSTGRES

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        with translated():
            return _count(await self._conn.execute(_sql(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        if batch:
            with translated():
                await self._conn.executemany(_sql(sql), batch)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with translated():
            rows: list[Row] = await self._conn.fetch(_sql(sql), *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with translated():
            row: Row | None = await self._conn.fetchrow(_sql(sql), *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        with translated():
            return await self._conn.fetchval(_sql(sql), *args)

    async def lock(self, key: int) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", key)

    async def try_lock(self, key: int) -> bool:
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


class PostgresEngine:
    dialect: Dialect = POSTGRES

    def __init__(self, pool: Any, dsn: str) -> None:
        self._pool = pool
        self.location = redact(dsn)
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = _POOL_MIN, max_size: int = _POOL_MAX
    ) -> PostgresEngine:
        """Connect (creating the database if it does not exist yet) and migrate."""
        try:
            try:
                pool = await _create_pool(dsn, min_size, max_size)
            except asyncpg.InvalidCatalogNameError:
                await _create_database(dsn)
                pool = await _create_pool(dsn, min_size, max_size)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot open PostgreSQL at {redact(dsn)}: {exc}") from exc
        engine = cls(pool, dsn)
        try:
            await engine._migrate()
        except BaseException:
            await pool.close()
            raise
        return engine

    @property
    def pool(self) -> Any:
        return self._pool

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_MIGRATIONS)
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

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    async def _in_transaction(self, fn: Callable[[Connection], Awaitable[T]], **options: Any) -> T:
        """Run `fn` in one transaction; retried whole if PostgreSQL aborts it for a conflict."""
        self._check_open()
        attempt = 0
        while True:
            attempt += 1
            try:
                with translated():
                    async with (
                        self._pool.acquire(timeout=_ACQUIRE_TIMEOUT_S) as conn,
                        conn.transaction(**options),
                    ):
                        return await fn(conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt >= _RETRIES:
                    raise

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        return await self._in_transaction(lambda conn: fn(PostgresTx(conn)))

    async def read(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        return await self._in_transaction(
            lambda conn: fn(PostgresTx(conn)), isolation="repeatable_read", readonly=True
        )

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self._check_open()
        with translated():
            rows: list[Row] = await self._pool.fetch(_sql(sql), *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        self._check_open()
        with translated():
            row: Row | None = await self._pool.fetchrow(_sql(sql), *args)
        return row

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None:
        gap = timedelta(seconds=gap_s)
        await self._in_transaction(lambda conn: flush.apply_heartbeats(conn, batch, gap))

    async def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int
    ) -> AsyncGenerator[bytes, None]:
        self._check_open()
        with translated():
            async for chunk in inventory.stream(self._pool, as_of, batch_size=batch_size):
                yield chunk
