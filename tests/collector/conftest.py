"""The real app factory on a real SQLite file in a temporary folder, with a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from collector.app import create_app
from collector.background import flush_heartbeats
from collector.health import WriteHealth
from collector.keys import KeyRing
from collector.settings import Settings
from collector.store import open_store
from collector.store.base import Role, Store
from collector.tokens import hash_token, new_token
from tests.support import postgres as pg
from tests.support.clock import FakeClock
from wire.times import parse_instant


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class PostgresDatabase:
    url: str
    tables: pg.Tables


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """One migrated database of this run's own on the real PostgreSQL, dropped at the end."""
    server = pg.base_url()
    pg.ensure_server(server)
    url = pg.run_blocking(pg.create_database(server))

    async def migrate() -> pg.Tables:
        await (await open_store(url)).close()
        return await pg.store_tables(url)

    try:
        yield PostgresDatabase(url, pg.run_blocking(migrate()))
    finally:
        pg.run_blocking(pg.drop_database(server, url))


@dataclass(frozen=True)
class StoreLocation:
    """Where a test's state lives: a SQLite file or a PostgreSQL URL (what `--db` takes)."""

    engine: str
    db: str


@pytest.fixture(params=["sqlite", "postgres"])
async def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """Every test that uses the store runs on both engines: a fresh SQLite file, and the run's
    PostgreSQL database emptied before the test."""
    if request.param == "sqlite":
        return StoreLocation("sqlite", str(tmp_path / "collector.sqlite3"))
    database: PostgresDatabase = request.getfixturevalue("postgres_database")
    await pg.empty_tables(database.url, database.tables)
    return StoreLocation("postgres", database.url)


@pytest.fixture
async def store(store_location: StoreLocation) -> AsyncIterator[Store]:
    s = await open_store(store_location.db)
    yield s
    await s.close()


@dataclass
class Harness:
    """A running collector app and the handful of steps most tests take with it."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    store: Store
    clock: FakeClock

    async def add_client(self, name: str = "Acme Dental", ttl_days: int = 30) -> tuple[str, str]:
        client = await self.store.create_client(name, now=self.clock.now(), actor="test")
        token = new_token("enrollment")
        await self.store.add_enrollment_token(
            client.client_id,
            hash_token(token),
            expires_at=self.clock.now() + timedelta(days=ttl_days),
            now=self.clock.now(),
            actor="test",
        )
        return client.client_id, token

    async def api_token(self, role: Role, name: str | None = None) -> dict[str, str]:
        token = new_token("api")
        await self.store.add_api_token(
            name or f"{role}-user", role, hash_token(token), now=self.clock.now(), actor="test"
        )
        return {"Authorization": f"Bearer {token}"}

    async def enroll(
        self, enrollment_token: str, hardware_id: str = "hw-1", **fields: Any
    ) -> dict[str, Any]:
        body = {
            "enrollment_token": enrollment_token,
            "hardware_id": hardware_id,
            "hostname": fields.pop("hostname", f"host-{hardware_id}"),
            "os": "Linux 6.1",
            "kind": fields.pop("kind", "pc"),
            **fields,
        }
        resp = await self.client.post("/v1/enroll", json=body)
        assert resp.status == 201, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def heartbeat(
        self, agent_token: str, components: list[dict[str, Any]] | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {
            "components": components
            if components is not None
            else [{"name": "rmm", "status": "running", "version": "0.1.0"}],
            **fields,
        }
        resp = await self.client.post(
            "/v1/heartbeat", json=body, headers={"Authorization": f"Bearer {agent_token}"}
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def flush(self) -> int:
        return await flush_heartbeats(self.app)

    async def get(self, path: str, headers: dict[str, str], status: int = 200) -> Any:
        resp = await self.client.get(path, headers=headers)
        assert resp.status == status, await resp.text()
        return await resp.json()


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(
    store: Store, clock: FakeClock, aiohttp_client: Any, tmp_path: Path
) -> HarnessFactory:
    """The app is torn down before the store it uses (fixtures end in reverse order). Its keys
    folder (signing keys, the pages' session secret) is the test's own, never the working
    directory's."""

    async def build(health: WriteHealth | None = None, **overrides: Any) -> Harness:
        settings = replace(
            Settings(
                db="unused",
                heartbeat_interval_s=60,
                flush_interval_s=3600,
                sweep_interval_s=3600,
                keys_dir=str(tmp_path / "keys"),
            ),
            **overrides,
        )
        app = create_app(settings, store=store, clock=clock, health=health)
        client = await aiohttp_client(app)
        return Harness(client=client, app=app, store=store, clock=clock)

    return build


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


@pytest.fixture
async def keyring(tmp_path: Path) -> KeyRing:
    """The collector's command-signing keys, in the test's own folder."""
    return KeyRing(tmp_path / "keys")


@pytest.fixture
async def fleet(make_harness: HarnessFactory, keyring: KeyRing) -> Harness:
    """A collector with a signing key, so offboards are delivered."""
    keyring.generate(parse_instant("2026-01-01T00:00:00Z"))
    return await make_harness(keys_dir=str(keyring.folder))
