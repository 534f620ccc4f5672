"""History retention: compaction drops presence runs, facts and coverage periods older than the
horizon, and never changes the inventory as of any instant inside it (so no billing answer for a
month inside the horizon changes); on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.rules.presence import retention_horizon
from collector.store.base import (
    AgentIdentity,
    CommandResultRecord,
    EnrollRequestRecord,
    Facts,
    HeartbeatRecord,
    InventoryRecord,
    OffboardRequestRecord,
    Store,
)
from collector.tokens import hash_token

GAP_S = 180.0
START = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
KEEP = timedelta(days=400)


async def _enroll(store: Store, hardware_id: str, at: datetime, agent: str) -> AgentIdentity:
    outcome = await store.enroll(
        EnrollRequestRecord(
            hash_token("enroll"),
            hardware_id,
            Facts(f"host-{hardware_id}", "Linux", "pc", "[]"),
            agent,
            hash_token(agent),
            None,
        ),
        now=at,
        gap_s=GAP_S,
    )
    return AgentIdentity(outcome.agent_id, outcome.machine_id, outcome.client_id)


async def _beat(store: Store, machine_id: str, at: datetime, hostname: str | None = None) -> None:
    await store.apply_heartbeats(
        [HeartbeatRecord(machine_id, at, at, hostname, None, None, "[]")], gap_s=GAP_S
    )


def _cutoffs(first: datetime, last: datetime) -> list[datetime]:
    """00:00 UTC on the 1st of every month from `first` to `last`."""
    year, month, out = first.year, first.month, []
    while (cutoff := datetime(year, month, 1, tzinfo=UTC)) <= last:
        out.append(cutoff)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


async def _inventory(store: Store, as_of: datetime) -> list[InventoryRecord]:
    rows = [r async for batch in store.iter_inventory(as_of) for r in batch]
    return sorted(rows, key=lambda r: r.machine_id)


async def _two_years_of_history(store: Store) -> None:
    client = await store.create_client("Acme", now=START, actor="test")
    await store.add_enrollment_token(
        client.client_id,
        hash_token("enroll"),
        expires_at=NOW + timedelta(days=1),
        now=START,
        actor="test",
    )
    # A laptop on for a few days, then away for two weeks, again and again: many runs.
    laptop = await _enroll(store, "laptop", START, "agent-laptop")
    moment = START
    while moment < NOW:
        for day in range(3):
            await _beat(store, laptop.machine_id, moment + timedelta(days=day))
        moment += timedelta(days=17)
    # A server renamed every two months: many facts rows.
    server = await _enroll(store, "server", START, "agent-server")
    moment, name = START, 0
    while moment < NOW:
        moment += timedelta(days=61)
        name += 1
        await _beat(store, server.machine_id, moment, hostname=f"srv-{name}")
    # A PC offboarded, enrolled again later (a new coverage period), then dark for 40 days.
    pc = await _enroll(store, "pc", START, "agent-pc-1")
    await _beat(store, pc.machine_id, START + timedelta(days=100))
    command, _ = await store.request_offboard(
        OffboardRequestRecord(pc.machine_id, "tina", "returned", None),
        now=START + timedelta(days=150),
    )
    await store.commands_for_delivery(pc, now=START + timedelta(days=150))
    await store.record_command_result(
        pc,
        CommandResultRecord(command.command_id, "succeeded", None, "[]"),
        now=START + timedelta(days=150),
    )
    again = await _enroll(store, "pc", START + timedelta(days=240), "agent-pc-2")
    for day in (300, 420, 600, 640):
        await _beat(store, again.machine_id, START + timedelta(days=day))


async def test_compaction_never_changes_inventory_as_of_any_month_inside_the_horizon(
    store: Store,
) -> None:
    await _two_years_of_history(store)
    horizon = retention_horizon(NOW, KEEP)
    cutoffs = _cutoffs(START, NOW)
    inside = [c for c in cutoffs if c >= horizon]
    # Instants between cutoffs too: right at the horizon, and 30 days after each heartbeat.
    instants = [*inside, horizon, horizon + timedelta(days=30), NOW]
    before = {at: await _inventory(store, at) for at in instants}

    removed = await store.compact_history(horizon_start=horizon)

    assert removed.presence > 10 and removed.facts > 2
    for at in instants:
        assert await _inventory(store, at) == before[at], at
    assert await store.compact_history(horizon_start=horizon) == type(removed)()


async def test_compaction_keeps_the_history_an_instant_just_inside_the_horizon_reads(
    store: Store,
) -> None:
    """The run that started before the horizon and is still the latest at it stays: the laptop
    is reported with its true last heartbeat, not as never seen."""
    await _two_years_of_history(store)
    horizon = retention_horizon(NOW, KEEP)
    await store.compact_history(horizon_start=horizon)
    rows = await _inventory(store, horizon)
    assert {r.hostname for r in rows} >= {"host-laptop", "host-pc"}
    laptop = next(r for r in rows if r.hostname == "host-laptop")
    assert horizon - laptop.last_seen < timedelta(days=17)
