"""Several stores on one database at once, on both engines.

Each "instance" here is a store with connections of its own, as each `rmm-collector serve`
process has on PostgreSQL; on SQLite, a second process on the same file is every `rmm-collector`
subcommand run while the collector serves (a client added, a token revoked). Whatever order
their transactions interleave in, each change lands once and nothing moves backwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from collector.background import state_windows
from collector.store import open_sql_store
from collector.store.base import (
    AgentIdentity,
    AuditFilter,
    CommandResultRecord,
    EnrollRequestRecord,
    Facts,
    HeartbeatRecord,
    MachineFilter,
    OffboardRequestRecord,
    Store,
)
from collector.store.store import SQLStore
from collector.tokens import hash_token
from tests.collector.conftest import StoreLocation
from tests.collector.test_presence_model import GAP, START
from tests.support.clock import FakeClock
from wire.times import EXPIRY

GAP_S = GAP.total_seconds()


@pytest.fixture
async def instances(store_location: StoreLocation) -> AsyncIterator[tuple[SQLStore, SQLStore]]:
    """Two collector instances' stores on one database."""
    first = await open_sql_store(store_location.db)
    second = await open_sql_store(store_location.db)
    yield first, second
    await first.close()
    await second.close()


async def enroll_fleet(
    store: Store, count: int, now: datetime = START, client: str = "Acme"
) -> list[AgentIdentity]:
    created = await store.create_client(client, now=now, actor="test")
    await store.add_enrollment_token(
        created.client_id,
        hash_token(f"enroll-{client}"),
        expires_at=now + timedelta(days=30),
        now=now,
        actor="test",
    )
    identities = []
    for i in range(count):
        outcome = await store.enroll(
            EnrollRequestRecord(
                hash_token(f"enroll-{client}"),
                f"hw-{client}-{i:05}",
                Facts(f"host-{i}", "Linux", "pc", "[]"),
                f"agent-{client}-{i}",
                hash_token(f"agent-{client}-{i}"),
                None,
            ),
            now=now,
            gap_s=GAP_S,
        )
        identities.append(AgentIdentity(outcome.agent_id, outcome.machine_id, outcome.client_id))
    return identities


def beat(machine_id: str, at: datetime, components: str = "[]", **facts: str) -> HeartbeatRecord:
    return HeartbeatRecord(
        machine_id,
        at,
        at,
        facts.get("hostname"),
        facts.get("os"),
        facts.get("kind"),
        components,
    )


# last-seen flushes from several instances


async def test_two_instances_flushing_the_same_machines_at_once_never_deadlock(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    fleet = await enroll_fleet(first, 300)
    ids = [a.machine_id for a in fleet]
    t1, t2 = START + timedelta(seconds=30), START + timedelta(seconds=31)
    # Opposite orders and overlapping chunks: the store sorts and locks in machine_id order.
    await asyncio.gather(
        *(
            store.apply_heartbeats([beat(m, at) for m in order], gap_s=GAP_S)
            for _ in range(5)
            for store, order, at in ((first, ids, t1), (second, ids[::-1], t2))
        )
    )
    for machine_id in ids[:20]:
        machine = await second.get_machine(machine_id)
        assert machine is not None and machine.last_seen == t2


async def test_a_heartbeat_flushed_late_by_another_instance_never_rolls_anything_back(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    (agent,) = await enroll_fleet(first, 1)
    newer, older = START + timedelta(seconds=61), START + timedelta(seconds=60)
    await first.apply_heartbeats([beat(agent.machine_id, newer, hostname="new")], gap_s=GAP_S)
    await second.apply_heartbeats([beat(agent.machine_id, older, hostname="old")], gap_s=GAP_S)
    machine = await first.get_machine(agent.machine_id)
    assert machine is not None
    assert (machine.last_seen, machine.hostname) == (newer, "new")
    rows = [r async for b in first.iter_inventory(newer + timedelta(seconds=1)) for r in b]
    assert rows[0].hostname == "new"


async def test_a_late_flush_after_a_long_gap_still_counts_the_earlier_heartbeat(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    (agent,) = await enroll_fleet(first, 1)
    back = START + timedelta(days=40)  # dark past the 30-day rule, then back through both
    await first.apply_heartbeats([beat(agent.machine_id, back + timedelta(seconds=1))], gap_s=GAP_S)
    await second.apply_heartbeats([beat(agent.machine_id, back)], gap_s=GAP_S)
    as_of = back + timedelta(microseconds=500)
    (row,) = [r async for b in first.iter_inventory(as_of) for r in b]
    assert back <= row.last_seen <= as_of  # not the enrollment 40 days before: still in inventory


# revocation feed


async def test_every_instance_sees_every_revocation_even_when_they_commit_out_of_order(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    fleet = await enroll_fleet(first, 40)
    _, start = await second.revocations_since(-1)
    seen: list[str] = []
    cursor = start
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal cursor
        while not done.is_set():
            revoked, cursor = await second.revocations_since(cursor)
            seen.extend(revoked)
            await asyncio.sleep(0)

    async def reenroll(store: Store, i: int) -> None:
        await store.enroll(
            EnrollRequestRecord(
                hash_token("enroll-Acme"),
                f"hw-Acme-{i:05}",
                Facts(f"host-{i}", "Linux", "pc", "[]"),
                f"agent-again-{i}",
                hash_token(f"agent-again-{i}"),
                None,
                previous_agent_token_hash=hash_token(f"agent-Acme-{i}"),
            ),
            now=START + timedelta(minutes=1),
            gap_s=GAP_S,
        )

    poller = asyncio.create_task(poll())
    await asyncio.gather(*(reenroll((first, second)[i % 2], i) for i in range(len(fleet))))
    done.set()
    await poller
    revoked, _ = await second.revocations_since(cursor)
    seen.extend(revoked)
    assert sorted(seen) == sorted(hash_token(a.agent_id) for a in fleet)


# expiry sweep


async def test_the_expiry_sweep_in_every_instance_records_each_expiry_once(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    await enroll_fleet(first, 50)
    clock = FakeClock(START + EXPIRY + timedelta(hours=1))
    windows = state_windows(clock, int(GAP_S))
    results = await asyncio.gather(
        *(store.expire_machines(windows) for store in (first, second, first, second))
    )
    assert sorted(m for r in results for m in r) == sorted(
        m.machine_id for m in await first.list_machines(MachineFilter(), windows)
    )
    entries = await second.list_audit(AuditFilter(action="machine.expired", limit=1000))
    assert len(entries) == 50


# commands through several instances


async def test_one_offboard_command_however_many_instances_take_the_request(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    (agent,) = await enroll_fleet(first, 1)
    request = OffboardRequestRecord(agent.machine_id, "tina", "returned", None)
    results = await asyncio.gather(
        *(s.request_offboard(request, now=START) for s in (first, second) * 3)
    )
    assert len({command.command_id for command, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_a_command_handed_out_and_reported_through_two_instances_lands_once(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    first, second = instances
    (agent,) = await enroll_fleet(first, 1)
    command, _ = await first.request_offboard(
        OffboardRequestRecord(agent.machine_id, "tina", "returned", "T-1"), now=START
    )
    later = START + timedelta(minutes=1)
    deliveries = await asyncio.gather(
        first.commands_for_delivery(agent, now=later),
        second.commands_for_delivery(agent, now=later),
    )
    assert {d[0].sequence for d in deliveries} == {command.sequence}
    result = CommandResultRecord(command.command_id, "succeeded", None, "[]")
    done = await asyncio.gather(
        first.record_command_result(agent, result, now=later),
        second.record_command_result(agent, result, now=later),
    )
    assert {d.state for d in done} == {"offboarded"}
    assert len(await first.list_audit(AuditFilter(action="command.delivered"))) == 1
    assert len(await first.list_audit(AuditFilter(action="offboard.completed"))) == 1


# streaming inventory


async def test_inventory_streams_one_consistent_snapshot_in_batches(
    instances: tuple[SQLStore, SQLStore],
) -> None:
    """Two server processes share the table and one snapshot: every machine exactly once, as it
    stood when the stream began, even when rows are rewritten (and move) meanwhile."""
    first, second = instances
    fleet = await enroll_fleet(first, 300)
    as_of = START + timedelta(seconds=1)
    later = START + timedelta(seconds=30)
    seen: list[str] = []
    async for batch in first.iter_inventory(as_of, batch_size=40):
        assert 0 < len(batch) <= 40
        if not seen:
            # Meanwhile another instance rewrites every row and enrolls more machines.
            await second.apply_heartbeats(
                [beat(a.machine_id, later, hostname="renamed") for a in fleet], gap_s=GAP_S
            )
            await enroll_fleet(second, 20, now=START, client="Other")
        seen += [r.machine_id for r in batch]
        assert all(r.hostname != "renamed" for r in batch)
    assert sorted(seen) == sorted(a.machine_id for a in fleet)
    after = [r async for b in first.iter_inventory(later, batch_size=40) for r in b]
    assert len(after) == 320 and {r.hostname for r in after} >= {"renamed"}


async def test_abandoning_an_inventory_stream_gives_its_connections_back(
    store_location: StoreLocation,
) -> None:
    options = {"max_size": 1} if store_location.engine == "postgres" else {}
    store = await open_sql_store(store_location.db, **options)
    try:
        await enroll_fleet(store, 3)
        for _ in range(3):
            stream = store.iter_inventory(START + timedelta(seconds=1), batch_size=1)
            async for _batch in stream:
                break
            await stream.aclose()  # type: ignore[attr-defined]
        assert len(await store.list_clients()) == 1
    finally:
        await store.close()
