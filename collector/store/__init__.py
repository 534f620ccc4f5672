"""All SQL lives behind the `Store` interface; `open_store` picks the engine from the URL.

Where things go, for whoever adds to the collector:

- A business decision (what a command result does, whether an enrollment is a re-image, when a
  run of presence closes, what expiry records) is a plain function in `collector.rules`, over
  plain values, tested without a database.
- The store's parts, one module per concern (`clients`, `enrollment`, `heartbeats`, `commands`,
  `audit`, `views`, `inventory`, `lifecycle`, `network`, `clones`, `coverage`), read the rows a
  rule needs, call it, and write what it decided, in one transaction (`Engine.write`). Their
  SQL is written once, with `?` placeholders, for both engines (`collector.store.sql`).
- What differs between SQLite and PostgreSQL lives in `collector.store.sqlite` and
  `collector.store.postgres`: connections and transactions, the schema migrations, the
  `Dialect` fragments, and the two hot paths whose SQL is each engine's own (the last-seen flush
  and the inventory). A new table is a new named migration in both `schema` modules.
- Every store behaviour is tested on both engines through the `store` fixture
  (`tests/collector/conftest.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from collector.store.base import Store, StoreError

if TYPE_CHECKING:  # the parts import the rules, which import the records from this package
    from collector.store.store import SQLStore


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(db: str) -> Store:
    """Open (creating and migrating if needed) the state named by `db`."""
    return await open_sql_store(db)


async def open_sql_store(db: str, **options: int) -> SQLStore:
    """The same, typed as the concrete store (tests and tools that reach engine details).

    Opening ends with a write, so a state the collector cannot write (a read-only folder, a
    lock another process holds) is a clear error here, not failed requests later."""
    from collector.store.store import SQLStore

    if is_postgres_url(db):
        from collector.store.postgres.engine import PostgresEngine

        store = SQLStore(await PostgresEngine.open(db, **options))
    else:
        from collector.store.sqlite.engine import SQLiteEngine

        store = SQLStore(await SQLiteEngine.open(db))
    try:
        await store.probe_write(datetime.now(UTC))
    except StoreError as exc:
        await store.close()
        raise StoreError(f"cannot write to {store.location}: {exc}") from exc
    return store
