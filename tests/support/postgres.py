"""The real PostgreSQL the tests run against: started if it is down, one database per test run.

`RMM_TEST_POSTGRES_URL` names the server and a database to connect through (default: the local
server's `test` database, user `postgres`). Each run creates its own uniquely named database
beside it and drops it at the end. When the server cannot be reached, a run with `CI=true` fails;
elsewhere the PostgreSQL variants are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CLUSTERS = Path("/etc/postgresql")

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a loop of its own, even from inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def base_url() -> str:
    return os.environ.get("RMM_TEST_POSTGRES_URL", DEFAULT_URL)


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


async def _reachable(url: str) -> str | None:
    """None when the server answers; otherwise why not."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def _start_local_clusters() -> str:
    """Start the local clusters (`pg_ctlcluster`, as the packaging installs them)."""
    if not CLUSTERS.is_dir():
        return f"no local PostgreSQL installation ({CLUSTERS} is missing)"
    notes = []
    for version in sorted(os.listdir(CLUSTERS)):
        result = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            text=True,
            check=False,
        )
        notes.append(f"pg_ctlcluster {version} main start: exit {result.returncode}")
        if result.stderr.strip():
            notes.append(result.stderr.strip())
    return "; ".join(notes)


def ensure_server(url: str, wait_s: float = 30.0) -> None:
    """Make sure the server answers, starting the local one if it is down; fail or skip if not."""
    problem = run_blocking(_reachable(url))
    if problem is None:
        return
    host = urlsplit(url).hostname or ""
    started = ""
    if host in {"127.0.0.1", "localhost", "::1", ""}:
        try:
            started = _start_local_clusters()
        except OSError as exc:
            started = f"could not run pg_ctlcluster: {exc}"
        deadline = time.monotonic() + wait_s
        while problem is not None and time.monotonic() < deadline:
            time.sleep(0.5)
            problem = run_blocking(_reachable(url))
    if problem is None:
        return
    reason = f"PostgreSQL at {url} is unreachable ({problem}); start attempt: {started or 'none'}"
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


async def create_database(url: str) -> str:
    """A new, uniquely named database on the server `url` names; its URL."""
    name = f"rmm_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(url, name)


async def create_named_database(url: str, database_url: str) -> None:
    """The empty database `database_url` names, on the server `url` names."""
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass(frozen=True)
class Tables:
    """The store's tables (children before parents) and identity columns, to empty them fast."""

    ordered: list[str]
    identities: list[tuple[str, str]]


async def store_tables(database_url: str) -> Tables:
    """Every table the store created (migrations applied), but the migration record itself."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        names = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename <> 'schema_migrations' ORDER BY tablename"
            )
        ]
        edges = await conn.fetch(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
        )
        identities = [
            (r[0], r[1])
            for r in await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND is_identity = 'YES'"
            )
        ]
    finally:
        await conn.close()
    parents: dict[str, set[str]] = {name: set() for name in names}
    for child, parent in edges:
        if child != parent:
            parents[child].add(parent)
    # Children first: a table goes once no remaining table refers to it.
    ordered: list[str] = []
    remaining = set(names)
    while remaining:
        leaves = sorted(t for t in remaining if not any(t in parents[o] for o in remaining))
        if not leaves:
            raise RuntimeError(f"foreign keys form a cycle among {sorted(remaining)}")
        ordered += leaves
        remaining -= set(leaves)
    return Tables(ordered, identities)


async def empty_tables(database_url: str, tables: Tables) -> None:
    """Back to a freshly migrated database: every row gone, identities restarted.

    `DELETE` of a few rows costs well under a millisecond where `TRUNCATE` costs ~90 ms.
    """
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        async with conn.transaction():
            for table in tables.ordered:
                await conn.execute(f'DELETE FROM "{table}"')
            for table, column in tables.identities:
                await conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" RESTART')
    finally:
        await conn.close()
