"""All SQL lives behind the `Store` interface; `open_store` picks the engine from the URL."""

from __future__ import annotations

from collector.store.base import Store


async def open_store(db: str) -> Store:
    """Open (creating and migrating if needed) the state named by `db`."""
    if db.startswith(("postgresql://", "postgres://")):
        from collector.store.postgres import PostgresStore

        return await PostgresStore.open(db)
    from collector.store.sqlite import SQLiteStore

    return await SQLiteStore.open(db)
