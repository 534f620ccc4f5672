"""An existing SQLite file is brought up to date when the collector opens it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from collector.store import open_store
from collector.store.sqlite_schema import MIGRATIONS
from wire.times import to_micros

ENROLLED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RENAMED = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)


def _file_at(path: Path, last_migration: str) -> None:
    """A file as a collector that knew migrations up to `last_migration` left it."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for name, sql in MIGRATIONS:
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", (name,))
        if name == last_migration:
            break
    conn.commit()
    conn.close()


async def test_facts_since_is_filled_in_from_the_facts_already_recorded(tmp_path: Path) -> None:
    path = tmp_path / "collector.sqlite3"
    _file_at(path, "0002_commands")
    conn = sqlite3.connect(path)
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

    store = await open_store(str(path))
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
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT facts_since FROM machines").fetchone() == (to_micros(RENAMED),)
    applied = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    conn.close()
    assert applied == sorted(name for name, _ in MIGRATIONS)
