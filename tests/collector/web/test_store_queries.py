"""The pages' aggregate queries agree with the one definition of each rule, machine by machine."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from collector.background import state_windows
from collector.store.base import (
    COMPONENT_STATUS_FILTERS,
    MACHINE_STATES,
    MachineFilter,
    MachineQuery,
    MachineRecord,
    StateWindows,
    Store,
    machine_state,
)
from tests.collector.conftest import StoreLocation
from tests.collector.web.fleet import seed_fleet
from tests.support.clock import FakeClock
from wire.times import EXPIRY

STALE = timedelta(days=7)
PENDING = timedelta(days=1)


def covered(record: MachineRecord) -> bool:
    components = json.loads(record.components_json)
    return bool(components) and all(
        c["status"] == "running" for c in components if c.get("required", True)
    )


def in_inventory(record: MachineRecord, windows: StateWindows) -> bool:
    return record.offboard_state != "offboarded" and record.last_seen > windows.expired_before


async def all_machines(store: Store, windows: StateWindows) -> list[MachineRecord]:
    return await store.list_machines(MachineFilter(limit=1_000_000), windows)


@pytest.fixture
async def seeded(store: Store, store_location: StoreLocation, clock: FakeClock) -> StateWindows:
    await seed_fleet(store_location, clock.now(), machines=2000, clients=7)
    return state_windows(clock, 180)


async def test_client_overview_counts_every_machine_by_the_rules(
    store: Store, seeded: StateWindows
) -> None:
    windows = seeded
    machines = await all_machines(store, windows)
    overview = await store.client_overview(
        windows, stale_before=windows.now - STALE, pending_before=windows.now - PENDING
    )
    assert len(overview) == 7
    assert sum(c.total for c in overview) == len(machines) == 2000
    for client in overview:
        mine = [m for m in machines if m.client_id == client.client_id]
        for state in MACHINE_STATES:
            assert client.by_state[state] == sum(machine_state(m, windows) == state for m in mine)
        billed = [m for m in mine if in_inventory(m, windows)]
        assert client.in_inventory == len(billed)
        assert client.covered == sum(covered(m) for m in billed)
        assert client.stale == sum(
            machine_state(m, windows) == "offline" and m.last_seen <= windows.now - STALE
            for m in mine
        )
        assert client.exposed == sum(
            m.offboard_state != "offboarded" and m.last_seen <= windows.now - EXPIRY for m in mine
        )
    assert 0 < sum(c.covered for c in overview) < sum(c.in_inventory for c in overview)


@pytest.mark.parametrize("status", COMPONENT_STATUS_FILTERS)
@pytest.mark.parametrize("component", [None, "antivirus", "backup"])
async def test_component_filters_match_their_definition(
    store: Store, seeded: StateWindows, status: str, component: str | None
) -> None:
    windows = seeded
    machines = await all_machines(store, windows)

    def matches(record: MachineRecord) -> bool:
        items = {c["name"]: c for c in json.loads(record.components_json)}
        if component is None:
            if status == "covered":
                return covered(record)
            if status == "gap":
                return not covered(record)
            return any(c["status"] == status for c in items.values())
        mine = items.get(component)
        if status == "missing":
            return mine is None or mine["status"] == "missing"
        if status == "gap":
            return mine is None or mine["status"] != "running"
        wanted = "running" if status == "covered" else status
        return mine is not None and mine["status"] == wanted

    expected = sorted(m.hostname for m in machines if matches(m))
    page = await store.machine_page(
        MachineQuery(component=component, component_status=status, limit=5000),  # type: ignore[arg-type]
        windows,
    )
    assert page.total == len(expected) > 0
    assert [m.hostname for m in page.machines] == expected


async def test_machine_pages_sort_offset_and_combine_filters(
    store: Store, seeded: StateWindows
) -> None:
    windows = seeded
    machines = await all_machines(store, windows)

    def stale_pcs(client_id: str) -> list[MachineRecord]:
        return sorted(
            (
                m
                for m in machines
                if m.client_id == client_id
                and m.kind == "pc"
                and machine_state(m, windows) == "offline"
                and m.last_seen <= windows.now - STALE
            ),
            key=lambda m: (m.last_seen, m.machine_id),
        )

    client_id = max({m.client_id for m in machines}, key=lambda c: len(stale_pcs(c)))
    expected = stale_pcs(client_id)
    query = MachineQuery(
        client_id=client_id,
        kind="pc",
        state="offline",
        seen_before=windows.now - STALE,
        sort="last_seen",
        limit=4,
    )
    first = await store.machine_page(query, windows)
    second = await store.machine_page(replace(query, offset=4), windows)
    assert first.total == second.total == len(expected) > 8
    assert [m.machine_id for m in first.machines + second.machines] == [
        m.machine_id for m in expected[:8]
    ]
    exposed = await store.machine_page(MachineQuery(exposed=True, limit=5000), windows)
    assert exposed.total == sum(
        m.offboard_state != "offboarded" and m.last_seen <= windows.expired_before for m in machines
    )
    search = await store.machine_page(MachineQuery(hostname_contains="SRV-00", limit=5000), windows)
    assert {m.hostname for m in search.machines} == {
        m.hostname for m in machines if "srv-00" in m.hostname
    }


async def test_offboards_needing_attention_are_the_overdue_and_the_failed(
    store: Store, seeded: StateWindows
) -> None:
    windows = seeded
    pending, failed = await store.offboards_needing_attention(
        pending_before=windows.now - PENDING, limit=10_000
    )
    assert pending and all(a.command.state == "offboard_pending" for a in pending)
    assert all(a.command.created_at <= windows.now - PENDING for a in pending)
    assert [a.command.created_at for a in pending] == sorted(a.command.created_at for a in pending)
    machines = {m.machine_id: m for m in await all_machines(store, windows)}
    assert len(failed) == sum(m.offboard_state == "offboard_failed" for m in machines.values())
    assert all(machines[a.command.machine_id].hostname == a.hostname for a in failed)
    few, _ = await store.offboards_needing_attention(pending_before=windows.now, limit=3)
    assert len(few) == 3
