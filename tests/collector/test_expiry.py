"""The 30-day rule: a machine not seen for 720 hours expires; the sweep records it once."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.background import sweep_expired
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness


async def test_sweep_records_each_expiry_once_as_the_system(harness: Harness) -> None:
    _, token = await harness.add_client()
    harness.clock.set(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    agent = await harness.enroll(token, hostname="shut-down-on-the-7th")
    harness.clock.set(datetime(2026, 4, 6, 11, 59, 59, tzinfo=UTC))
    assert await sweep_expired(harness.app) == []
    harness.clock.set(datetime(2026, 4, 6, 12, 0, tzinfo=UTC))  # exactly 720 hours later
    assert await sweep_expired(harness.app) == [agent["machine_id"]]
    assert await sweep_expired(harness.app) == []
    entries = await harness.store.list_audit(AuditFilter(action="machine.expired"))
    ((_, entry),) = entries
    assert entry.actor == "system"
    assert entry.target == agent["machine_id"]
    assert entry.detail["last_seen"] == "2026-03-07T12:00:00Z"
    assert entry.detail["expired_at"] == "2026-04-06T12:00:00Z"


async def test_a_machine_back_after_expiring_is_in_inventory_again_and_can_expire_again(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    billing = await harness.api_token("billing")
    viewer = await harness.api_token("viewer")
    harness.clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    agent = await harness.enroll(token)
    harness.clock.set(datetime(2026, 2, 15, tzinfo=UTC))
    await sweep_expired(harness.app)
    march = await harness.get("/v1/inventory?as_of=2026-02-15T00:00:00Z", billing)
    assert march["machines"][0]["last_seen"] == "2026-01-10T00:00:00Z"  # billing drops it

    harness.clock.set(datetime(2026, 2, 20, tzinfo=UTC))
    await harness.heartbeat(agent["agent_token"])
    await harness.flush()
    machine = await harness.get(f"/v1/machines/{agent['machine_id']}", viewer)
    assert machine["state"] == "online"
    harness.clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    back = await harness.get("/v1/inventory?as_of=2026-03-01T00:00:00Z", billing)
    assert back["machines"][0]["last_seen"] == "2026-02-20T00:00:00Z"

    harness.clock.set(datetime(2026, 3, 22, tzinfo=UTC))
    assert await sweep_expired(harness.app) == [agent["machine_id"]]
    entries = await harness.store.list_audit(AuditFilter(action="machine.expired"))
    assert len(entries) == 2
