"""A collector honest about its own health when the database stops taking writes.

The stall is real: another connection holds the SQLite file's write lock, as a crashed or stuck
process (or an operator's `sqlite3` shell) would. PostgreSQL's counterpart (a lock held by another
session) is answered by the same code after its 10-second lock timeout, too slow for this suite;
its error mapping is covered by the engine's translation of driver errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from collector.health import WriteHealth
from collector.store import open_store
from collector.store.base import StoreError
from tests.collector.conftest import Harness, HarnessFactory, StoreLocation
from tests.support.clock import FakeClock


@contextmanager
def write_lock_held(db: str) -> Iterator[None]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store_location(tmp_path: Path) -> StoreLocation:
    """These tests run on SQLite only (see the module's docstring)."""
    return StoreLocation("sqlite", str(tmp_path / "collector.sqlite3"))


@pytest.fixture
def sqlite_only(store_location: StoreLocation) -> str:
    return store_location.db


@pytest.fixture
async def stalled(sqlite_only: str, make_harness: HarnessFactory) -> tuple[Harness, FakeMonotonic]:
    """The flush runs only when the test says (its background interval is an hour); the health
    it proves runs on a monotonic clock the test moves."""
    monotonic = FakeMonotonic()
    harness = await make_harness(health=WriteHealth(1.0, monotonic=monotonic))
    return harness, monotonic


async def test_healthz_answers_503_once_writes_have_failed_for_five_flush_intervals(
    sqlite_only: str, stalled: tuple[Harness, FakeMonotonic]
) -> None:
    harness, monotonic = stalled
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    with write_lock_held(sqlite_only):
        await harness.heartbeat(agent["agent_token"])  # acknowledged from memory
        with pytest.raises(StoreError):
            await harness.flush()
        monotonic.now += 4
        assert (await harness.client.get("/healthz")).status == 200
        monotonic.now += 2
        resp = await harness.client.get("/healthz")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        body = await resp.json()
        assert body["error"] == "database_unavailable"
        assert "no database write has succeeded for 6 s" in body["detail"]
        assert "locked" in body["detail"]
    assert await harness.flush() == 1  # the heartbeat kept in memory lands now
    assert (await harness.client.get("/healthz")).status == 200


async def test_an_idle_collector_probes_a_write_so_its_health_stays_true(
    sqlite_only: str, stalled: tuple[Harness, FakeMonotonic]
) -> None:
    harness, monotonic = stalled
    monotonic.now += 3  # nothing to flush for three intervals: the flush probes instead
    with write_lock_held(sqlite_only):
        with pytest.raises(StoreError):
            await harness.flush()
        monotonic.now += 3
        assert (await harness.client.get("/healthz")).status == 503
    await harness.flush()
    assert (await harness.client.get("/healthz")).status == 200


async def test_a_write_refused_by_a_locked_database_is_a_503_json_and_changes_nothing(
    sqlite_only: str, stalled: tuple[Harness, FakeMonotonic]
) -> None:
    harness, _ = stalled
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    with write_lock_held(sqlite_only):
        resp = await harness.client.post(
            "/v1/enroll",
            json={
                "enrollment_token": token,
                "hardware_id": "hw-stalled",
                "hostname": "pc-stalled",
                "os": "Linux",
                "kind": "pc",
            },
        )
        assert resp.status == 503, await resp.text()
        assert resp.content_type == "application/json"
        assert resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error"] == "database_unavailable"
    machines = await harness.get("/v1/machines", admin)
    assert machines["machines"] == []


async def test_machines_heartbeating_through_a_write_stall_stay_online(
    sqlite_only: str, stalled: tuple[Harness, FakeMonotonic], clock: FakeClock
) -> None:
    harness, _ = stalled
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token)
    with write_lock_held(sqlite_only):
        for _ in range(6):  # 6 minutes of heartbeats, none written
            clock.advance(minutes=1)
            await harness.heartbeat(agent["agent_token"])
        with pytest.raises(StoreError):
            await harness.flush()
        machine = await harness.get(f"/v1/machines/{agent['machine_id']}", admin)
        assert machine["state"] == "online"
        assert machine["last_seen"] == clock.now().isoformat().replace("+00:00", "Z")
        listed = await harness.get("/v1/machines", admin)
        assert listed["machines"][0]["state"] == "online"


def test_a_state_the_collector_cannot_write_is_a_clear_error_naming_the_file(
    tmp_path: Path,
) -> None:
    import asyncio

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    with pytest.raises(StoreError, match=r"cannot create the SQLite file .*a-file"):
        asyncio.run(open_store(str(not_a_folder / "collector.sqlite3")))

    db = tmp_path / "locked.sqlite3"
    asyncio.run(_open_and_close(str(db)))
    with write_lock_held(str(db)), pytest.raises(StoreError) as caught:
        asyncio.run(open_store(str(db)))
    assert str(db) in str(caught.value) and "locked" in str(caught.value)


async def _open_and_close(db: str) -> None:
    await (await open_store(db)).close()
