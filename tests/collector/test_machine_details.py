"""What the NOC sees of each machine beside its facts (issue 22): the agent's version and who is
logged in, from heartbeats, and the machine's own IP addresses, from its network section; kept
as the latest value per machine, written by the last-seen flush, and searched with the hostname
and the OS. Every test that uses the store runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector.rules.network import network_report, own_addresses
from collector.store import open_store
from collector.store.base import (
    HeartbeatRecord,
    MachineFilter,
    MachineQuery,
    StateWindows,
    Store,
)
from collector.store.postgres.schema import MIGRATIONS as POSTGRES_MIGRATIONS
from collector.store.rows import users_text
from collector.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.collector.conftest import Harness, PostgresDatabase, StoreLocation
from tests.collector.test_bulk_enrollment import _client_with_token
from tests.collector.test_flush import _enrollment
from tests.support import postgres as pg
from wire.times import parse_instant, to_micros

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GAP_S = 180.0


def beat(machine_id: str, at: datetime, **fields: Any) -> HeartbeatRecord:
    return HeartbeatRecord(machine_id, at, at, None, None, None, "[]", **fields)


def network(addresses: list[str]) -> dict[str, Any]:
    return {"macs": ["02:00:00:00:00:01"], "addresses": addresses, "neighbors": []}


def test_addresses_are_kept_valid_canonical_once_each_in_the_agents_order() -> None:
    assert own_addresses(
        ["192.168.1.10", "2001:DB8::0:10", "172.17.0.1", "not an address", "192.168.1.10 "]
    ) == ("192.168.1.10", "2001:db8::10", "172.17.0.1")


def test_logged_in_users_are_kept_once_each_sorted_one_per_line() -> None:
    assert users_text(["bob", "alice", "bob"]) == "alice\nbob"
    assert users_text(["alice", "mallory\nroot"]) == "alice"
    assert users_text([]) == ""
    assert users_text(None) is None


async def test_the_flush_keeps_the_latest_version_and_users_and_a_heartbeat_without_them_keeps_them(
    store: Store,
) -> None:
    await _client_with_token(store)
    enrolled = await store.enroll(_enrollment("pc-1", "agent-a"), now=NOW, gap_s=GAP_S)
    machine_id = enrolled.machine_id
    first = await store.get_machine(machine_id)
    assert first is not None
    assert first.agent_version == "1.0"  # what the enrollment said
    assert first.users is None and first.addresses is None  # never reported
    at = NOW + timedelta(minutes=1)
    await store.apply_heartbeats(
        [beat(machine_id, at, agent_version="1.1", users=["bob", "alice"])], gap_s=GAP_S
    )
    machine = await store.get_machine(machine_id)
    assert machine is not None
    assert (machine.agent_version, machine.users) == ("1.1", ("alice", "bob"))
    await store.apply_heartbeats([beat(machine_id, at + timedelta(minutes=1))], gap_s=GAP_S)
    kept = await store.get_machine(machine_id)
    assert kept is not None
    assert (kept.agent_version, kept.users) == ("1.1", ("alice", "bob"))
    assert kept.last_seen == at + timedelta(minutes=1)
    await store.apply_heartbeats(
        [beat(machine_id, at + timedelta(minutes=2), users=[])], gap_s=GAP_S
    )
    nobody = await store.get_machine(machine_id)
    assert nobody is not None and nobody.users == ()


async def test_a_heartbeat_flushed_late_never_overwrites_newer_details(store: Store) -> None:
    await _client_with_token(store)
    enrolled = await store.enroll(_enrollment("pc-1", "agent-a"), now=NOW, gap_s=GAP_S)
    machine_id = enrolled.machine_id
    await store.apply_heartbeats(
        [beat(machine_id, NOW + timedelta(minutes=5), agent_version="2.0", users=["carol"])],
        gap_s=GAP_S,
    )
    await store.apply_heartbeats(
        [beat(machine_id, NOW + timedelta(minutes=4), agent_version="1.9", users=["dave"])],
        gap_s=GAP_S,
    )
    machine = await store.get_machine(machine_id)
    assert machine is not None
    assert (machine.agent_version, machine.users) == ("2.0", ("carol",))


async def test_an_enrollment_again_records_the_new_agents_version(store: Store) -> None:
    await _client_with_token(store)
    first = await store.enroll(_enrollment("pc-1", "agent-a"), now=NOW, gap_s=GAP_S)
    await store.apply_heartbeats(
        [beat(first.machine_id, NOW + timedelta(minutes=1), agent_version="1.0")], gap_s=GAP_S
    )
    again = replace(_enrollment("pc-1", "agent-b", previous="agent-a"), agent_version="3.0")
    await store.enroll(again, now=NOW + timedelta(minutes=2), gap_s=GAP_S)
    machine = await store.get_machine(first.machine_id)
    assert machine is not None and machine.agent_version == "3.0"


async def test_the_network_section_keeps_the_machines_addresses_and_search_finds_every_detail(
    store: Store,
) -> None:
    await _client_with_token(store)
    front = await store.enroll(_enrollment("front-desk", "agent-a"), now=NOW, gap_s=GAP_S)
    at = NOW + timedelta(minutes=1)
    await store.apply_heartbeats(
        [beat(front.machine_id, at, agent_version="1.1", users=["Alice.Smith"])], gap_s=GAP_S
    )
    await store.apply_network(
        [
            network_report(
                front.machine_id,
                front.client_id,
                at,
                ["02:00:00:00:00:01"],
                [],
                ["192.168.7.21", "fd00::21"],
            )
        ]
    )
    machine = await store.get_machine(front.machine_id)
    assert machine is not None and machine.addresses == ("192.168.7.21", "fd00::21")
    windows_at = NOW + timedelta(minutes=2)
    windows = StateWindows(
        now=windows_at,
        online_since=windows_at - timedelta(minutes=3),
        expired_before=windows_at - timedelta(days=30),
    )
    for search in ("FRONT-", "192.168.7", "FD00::", "alice.smith", "linux"):
        listed = await store.list_machines(MachineFilter(search=search), windows)
        page = await store.machine_page(MachineQuery(search=search), windows)
        assert [m.machine_id for m in listed] == [front.machine_id], search
        assert page.total == 1 and page.machines[0].machine_id == front.machine_id, search
    for search in ("192.168.8", "bob", "windows", "1.1"):
        assert not await store.list_machines(MachineFilter(search=search), windows), search
        assert (await store.machine_page(MachineQuery(search=search), windows)).total == 0
    moved = network_report(front.machine_id, front.client_id, at, [], [], ["192.168.9.4"])
    await store.apply_network([moved])
    renumbered = await store.get_machine(front.machine_id)
    assert renumbered is not None and renumbered.addresses == ("192.168.9.4",)
    await store.apply_network([replace(moved, addresses=("192.168.7.21", "fd00::21")), moved])
    kept = await store.get_machine(front.machine_id)
    assert kept is not None and kept.addresses == ("192.168.9.4",)  # the later one wins


async def test_the_api_shows_the_details_a_heartbeat_reported_and_filters_with_q(
    harness: Harness,
) -> None:
    _client_id, token = await harness.add_client()
    front = await harness.enroll(token, "hw-front", hostname="front-desk", agent_version="1.4.0")
    back = await harness.enroll(token, "hw-back", hostname="back-office")
    await harness.heartbeat(
        front["agent_token"],
        agent_version="1.5.0",
        users=["alice", "bob", "alice"],
        network=network(["10.1.2.3", "2001:db8::3"]),
    )
    await harness.heartbeat(back["agent_token"])  # an older agent: none of the new fields
    await harness.flush()
    viewer = await harness.api_token("viewer")
    shown = await harness.get(f"/v1/machines/{front['machine_id']}", viewer)
    assert shown["agent_version"] == "1.5.0"
    assert shown["users"] == ["alice", "bob"]
    assert shown["addresses"] == ["10.1.2.3", "2001:db8::3"]
    older = await harness.get(f"/v1/machines/{back['machine_id']}", viewer)
    assert older["agent_version"] is None  # the enrollment did not say either
    assert older["users"] is None and older["addresses"] is None
    assert parse_instant(older["last_seen"]) == harness.clock.now()
    for q in ("10.1.2", "ALICE", "front"):
        listed = await harness.get(f"/v1/machines?q={q}", viewer)
        assert [m["hostname"] for m in listed["machines"]] == ["front-desk"], q
    everyone = await harness.get("/v1/machines?q=", viewer)
    assert len(everyone["machines"]) == 2


async def test_a_later_heartbeat_without_users_or_network_keeps_what_was_reported(
    harness: Harness,
) -> None:
    _client_id, token = await harness.add_client()
    pc = await harness.enroll(token, "hw-1")
    await harness.heartbeat(
        pc["agent_token"], agent_version="1.5.0", users=["alice"], network=network(["10.0.0.9"])
    )
    await harness.flush()
    harness.clock.advance(minutes=1)
    await harness.heartbeat(pc["agent_token"])
    await harness.flush()
    shown = await harness.get(f"/v1/machines/{pc['machine_id']}", await harness.api_token("viewer"))
    assert (shown["agent_version"], shown["users"], shown["addresses"]) == (
        "1.5.0",
        ["alice"],
        ["10.0.0.9"],
    )


async def test_the_document_describes_the_new_fields_and_the_search_parameter(
    harness: Harness,
) -> None:
    spec = await harness.get("/v1/openapi.json", {})
    machine = spec["components"]["schemas"]["Machine"]["properties"]
    assert {"agent_version", "users", "addresses"} <= machine.keys()
    params = {p["name"] for p in spec["paths"]["/v1/machines"]["get"]["parameters"]}
    assert "q" in params


@pytest.fixture
def fresh_location(
    store_location: StoreLocation, tmp_path: Path, request: pytest.FixtureRequest
) -> str:
    """A location with nothing there yet (no file, no database)."""
    if store_location.engine == "sqlite":
        return str(tmp_path / "fresh" / "collector.sqlite3")
    database: PostgresDatabase = request.getfixturevalue("postgres_database")
    return pg.with_database(database.url, database.url.rsplit("/", 1)[-1] + "_details")


_AT_0008 = [
    "INSERT INTO clients (client_id, name, created_at) VALUES ('c', 'Acme', ?)",
    "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, components, "
    "first_seen, presence_start, last_seen, facts_since, agent_id) "
    "VALUES ('m', 'c', 'hw', 'pc-1', 'Linux', 'pc', '[]', ?, ?, ?, ?, 'agent-new')",
    "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, created_at) "
    "VALUES ('agent-old', 'm', 'h-old', '0.8.0', ?)",
    "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, created_at) "
    "VALUES ('agent-new', 'm', 'h-new', '0.9.1', ?)",
]


async def _state_at_0008(engine: str, location: str) -> None:
    """The state as the collector left it before migration 0009, with one enrolled machine
    whose current agent is the second it had."""
    if engine == "sqlite":
        Path(location).parent.mkdir(parents=True)
        conn = sqlite3.connect(location)
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        for name, sql in SQLITE_MIGRATIONS[:8]:
            conn.executescript(sql)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", (name,))
        at = to_micros(NOW)
        for statement in _AT_0008:
            conn.execute(statement, (at,) * statement.count("?"))
        conn.commit()
        conn.close()
        return
    await pg.create_named_database(pg.base_url(), location)
    pg_conn = await asyncpg.connect(location)
    try:
        await pg_conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)"
        )
        for name, sql in POSTGRES_MIGRATIONS[:8]:
            await pg_conn.execute(sql)
            await pg_conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        for statement in _AT_0008:
            numbered = statement
            for n in range(1, statement.count("?") + 1):
                numbered = numbered.replace("?", f"${n}", 1)
            await pg_conn.execute(numbered, *(NOW,) * statement.count("?"))
    finally:
        await pg_conn.close()


async def test_migration_0009_gives_existing_machines_their_current_agents_version(
    store_location: StoreLocation, fresh_location: str
) -> None:
    await _state_at_0008(store_location.engine, fresh_location)
    try:
        store = await open_store(fresh_location)
        try:
            machine = await store.get_machine("m")
        finally:
            await store.close()
        assert machine is not None
        assert machine.agent_version == "0.9.1"
        assert machine.users is None and machine.addresses is None
    finally:
        if store_location.engine == "postgres":
            await pg.drop_database(pg.base_url(), fresh_location)
