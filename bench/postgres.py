"""The PostgreSQL server the benchmarks use: a database of their own, dropped afterwards.

`RMM_BENCH_POSTGRES_URL` names the server and a database to connect through (default: the local
server's `test` database, user `postgres`). A local server that is down is started first.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("RMM_BENCH_POSTGRES_URL", DEFAULT_URL)


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


def ensure_running(url: str) -> None:
    if asyncio.run(_answers(url)):
        return
    clusters = Path("/etc/postgresql")
    if urlsplit(url).hostname in {"127.0.0.1", "localhost"} and clusters.is_dir():
        for version in sorted(os.listdir(clusters)):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
                capture_output=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if asyncio.run(_answers(url)):
                return
            time.sleep(0.5)
    raise RuntimeError(f"PostgreSQL at {url} does not answer")


async def create_database(url: str, label: str) -> str:
    name = f"rmm_bench_{label}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def drop_database(url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
