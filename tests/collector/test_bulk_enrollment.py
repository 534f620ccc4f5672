"""Bulk enrollment of new machines (fleet set-up) records what an API enrollment records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.store.base import AuditFilter, Conflict, EnrollRequestRecord, Facts, NotFound, Store
from collector.tokens import hash_token
from fleetsim.enroll import BulkEnrollingStore

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def _client_with_token(store: Store, token: str = "enroll") -> str:
    client = await store.create_client("Acme", now=NOW, actor="test")
    await store.add_enrollment_token(
        client.client_id, hash_token(token), expires_at=NOW + timedelta(days=1), now=NOW, actor="t"
    )
    return client.client_id


def _requests(count: int, token: str = "enroll", prefix: str = "bulk") -> list[EnrollRequestRecord]:
    return [
        EnrollRequestRecord(
            hash_token(token),
            f"{prefix}-{i}",
            Facts(f"{prefix}-host-{i}", "Linux", "server" if i % 2 else "pc", "[]"),
            f"{prefix}-agent-{i}",
            hash_token(f"{prefix}-agent-{i}"),
            "1.0",
        )
        for i in range(count)
    ]


async def test_bulk_enrolled_machines_look_like_enrolled_ones(store: Store) -> None:
    assert isinstance(store, BulkEnrollingStore)
    client_id = await _client_with_token(store)
    outcomes = await store.enroll_new_machines_in_bulk(_requests(3), now=NOW)
    assert [(o.client_id, o.reenrolled) for o in outcomes] == [(client_id, False)] * 3
    found = await store.find_agent(hash_token("bulk-agent-1"))
    assert found is not None and found.machine_id == outcomes[1].machine_id
    machine = await store.get_machine(outcomes[1].machine_id)
    assert machine is not None
    assert (machine.hostname, machine.kind, machine.first_seen, machine.last_seen) == (
        "bulk-host-1",
        "server",
        NOW,
        NOW,
    )
    rows = [r async for b in store.iter_inventory(NOW + timedelta(seconds=1)) for r in b]
    assert sorted(r.machine_id for r in rows) == sorted(o.machine_id for o in outcomes)
    assert {r.first_seen for r in rows} == {NOW}
    enrolled = await store.list_audit(AuditFilter(action="machine.enrolled"))
    assert sorted(e.target for _, e in enrolled) == sorted(o.machine_id for o in outcomes)


async def test_bulk_enrollment_of_known_hardware_writes_nothing(store: Store) -> None:
    assert isinstance(store, BulkEnrollingStore)
    await _client_with_token(store)
    await store.enroll_new_machines_in_bulk(_requests(2), now=NOW)
    with pytest.raises(Conflict):
        await store.enroll_new_machines_in_bulk(_requests(3), now=NOW)
    assert len(await store.list_audit(AuditFilter(action="machine.enrolled"))) == 2
    assert await store.find_agent(hash_token("bulk-agent-2")) is None


async def test_bulk_enrollment_needs_a_valid_enrollment_token(store: Store) -> None:
    assert isinstance(store, BulkEnrollingStore)
    await _client_with_token(store)
    with pytest.raises(NotFound):
        await store.enroll_new_machines_in_bulk(_requests(2, token="guessed"), now=NOW)
