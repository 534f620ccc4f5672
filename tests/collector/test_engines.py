"""Opening, migrating and closing the state, on both engines; and what each engine's plumbing
must get right on its own (PostgreSQL's pooled sessions)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from collector.store import open_sql_store, open_store
from collector.store.postgres.engine import keep_session, redact
from collector.store.postgres.schema import MIGRATIONS as POSTGRES_MIGRATIONS
from collector.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.collector.conftest import PostgresDatabase, StoreLocation
from tests.support import postgres as pg
from wire.times import to_micros

ENROLLED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RENAMED = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def fresh_location(
    store_location: StoreLocation, tmp_path: Path, request: pytest.FixtureRequest
) -> object:
    """A location with nothing there yet (no file, no database)."""
    if store_location.engine == "sqlite":
        return str(tmp_path / "fresh" / "collector.sqlite3")
    database: PostgresDatabase = request.getfixturevalue("postgres_database")
    return pg.with_database(database.url, database.url.rsplit("/", 1)[-1] + "_fresh")


async def _applied(db: str) -> list[str]:
    if db.startswith("postgresql://"):
        conn = await asyncpg.connect(db)
        try:
            return sorted(r[0] for r in await conn.fetch("SELECT name FROM schema_migrations"))
        finally:
            await conn.close()
    with sqlite3.connect(db) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM schema_migrations"))


async def test_instances_opening_together_create_the_state_and_apply_each_migration_once(
    store_location: StoreLocation, fresh_location: str
) -> None:
    migrations = SQLITE_MIGRATIONS if store_location.engine == "sqlite" else POSTGRES_MIGRATIONS
    try:
        stores = await asyncio.gather(*(open_sql_store(fresh_location) for _ in range(4)))
        for store in stores:
            await store.close()
        assert await _applied(fresh_location) == [name for name, _ in migrations]
    finally:
        if store_location.engine == "postgres":
            await pg.drop_database(pg.base_url(), fresh_location)


async def test_close_is_idempotent_and_a_closed_store_refuses_work(
    store_location: StoreLocation,
) -> None:
    store = await open_store(store_location.db)
    await store.close()
    await store.close()
    with pytest.raises(Exception, match="closed"):
        await store.list_clients()


async def test_an_unreachable_server_is_a_clear_store_error_without_the_password() -> None:
    url = "postgresql://rmm:s3cret@127.0.0.1:1/rmm"
    with pytest.raises(Exception, match="cannot open PostgreSQL") as caught:
        await open_store(url)
    assert "s3cret" not in str(caught.value)
    assert redact(url) == "postgresql://rmm:***@127.0.0.1:1/rmm"


async def test_a_pooled_connection_left_in_a_transaction_is_rolled_back_before_reuse(
    postgres_database: PostgresDatabase,
) -> None:
    """The pool skips the full session reset after each query (the store leaves no session
    state), but a transaction a cancelled task left open, with its locks, never outlives it."""
    database = postgres_database.url
    left_open = await asyncpg.connect(database)
    other = await asyncpg.connect(database)
    try:
        await left_open.execute("BEGIN")
        await left_open.execute("SELECT pg_advisory_xact_lock(42)")
        assert not await other.fetchval("SELECT pg_try_advisory_lock(42)")
        await keep_session(left_open)
        assert not left_open.is_in_transaction()
        assert await other.fetchval("SELECT pg_try_advisory_lock(42)")
    finally:
        await left_open.close()
        await other.close()


# An existing database is brought up to date: `facts_since` (0003) filled in from the facts
# already recorded, so inventory as of a past instant still reads the facts of then.


def _sqlite_at_0002(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for name, sql in SQLITE_MIGRATIONS[:2]:
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", (name,))
    conn.execute("INSERT INTO clients (client_id, name, created_at) VALUES ('c', 'Acme', 0)")
    conn.execute(
        "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, "
        "components, first_seen, presence_start, last_seen) "
        "VALUES ('m', 'c', 'hw', 'pc-new', 'Linux', 'pc', '[]', ?, ?, ?)",
        (to_micros(ENROLLED), to_micros(ENROLLED), to_micros(RENAMED)),
    )
    conn.executemany(
        "INSERT INTO facts VALUES ('m', ?, ?, 'Linux', 'pc', '[]')",
        [(to_micros(ENROLLED), "pc-old"), (to_micros(RENAMED), "pc-new")],
    )
    conn.execute(
        "INSERT INTO coverage (machine_id, first_seen) VALUES ('m', ?)", (to_micros(ENROLLED),)
    )
    conn.commit()
    conn.close()


async def _postgres_at_0002(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)"
        )
        for name, sql in POSTGRES_MIGRATIONS[:2]:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        await conn.execute(
            "INSERT INTO clients (client_id, name, created_at) VALUES ('c', 'Acme', $1)", ENROLLED
        )
        await conn.execute(
            "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, "
            "components, first_seen, presence_start, last_seen) "
            "VALUES ('m', 'c', 'hw', 'pc-new', 'Linux', 'pc', '[]', $1, $1, $2)",
            ENROLLED,
            RENAMED,
        )
        await conn.executemany(
            "INSERT INTO facts VALUES ('m', $1, $2, 'Linux', 'pc', '[]')",
            [(ENROLLED, "pc-old"), (RENAMED, "pc-new")],
        )
        await conn.execute(
            "INSERT INTO coverage (machine_id, first_seen) VALUES ('m', $1)", ENROLLED
        )
    finally:
        await conn.close()


async def test_an_existing_database_is_migrated_and_keeps_answering_for_the_past(
    store_location: StoreLocation, fresh_location: str
) -> None:
    if store_location.engine == "sqlite":
        Path(fresh_location).parent.mkdir(parents=True)
        _sqlite_at_0002(Path(fresh_location))
        migrations = SQLITE_MIGRATIONS
    else:
        await pg.create_named_database(pg.base_url(), fresh_location)
        await _postgres_at_0002(fresh_location)
        migrations = POSTGRES_MIGRATIONS
    try:
        store = await open_store(fresh_location)
        try:
            before = [
                r async for b in store.iter_inventory(datetime(2026, 3, 10, tzinfo=UTC)) for r in b
            ]
            after = [
                r async for b in store.iter_inventory(datetime(2026, 3, 25, tzinfo=UTC)) for r in b
            ]
        finally:
            await store.close()
        assert [r.hostname for r in before] == ["pc-old"]
        assert [r.hostname for r in after] == ["pc-new"]
        assert await _applied(fresh_location) == sorted(name for name, _ in migrations)
    finally:
        if store_location.engine == "postgres":
            await pg.drop_database(pg.base_url(), fresh_location)
