"""The last-seen flush: buffered heartbeats written to the store in one go, on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.store.base import EnrollRequestRecord, Facts, HeartbeatRecord, Store
from collector.tokens import hash_token
from fleetsim.enroll import BulkEnrollingStore
from tests.collector.test_bulk_enrollment import _client_with_token, _requests

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GAP_S = 180.0


def _enrollment(hostname: str, agent: str, previous: str | None = None) -> EnrollRequestRecord:
    """`previous`: the agent whose credential the enrollment proves (a re-image)."""
    return EnrollRequestRecord(
        hash_token("enroll"),
        "hw-1",
        Facts(hostname, "Linux", "pc", '[{"name":"antivirus"}]'),
        agent,
        hash_token(agent),
        "1.0",
        previous_agent_token_hash=None if previous is None else hash_token(previous),
    )


async def test_a_flush_of_thousands_of_machines_lands_for_every_one(store: Store) -> None:
    """More machines than one write chunk: each gets its own last-seen and its changed facts."""
    assert isinstance(store, BulkEnrollingStore)
    await _client_with_token(store)
    outcomes = await store.enroll_new_machines_in_bulk(_requests(4_500), now=NOW)
    later = NOW + timedelta(seconds=30)
    batch = [
        HeartbeatRecord(
            o.machine_id,
            later,
            later + timedelta(microseconds=i),
            f"renamed-{i}" if i % 1000 == 0 else None,
            None,
            None,
            "[]",
        )
        for i, o in enumerate(outcomes)
    ]
    await store.apply_heartbeats(batch, gap_s=GAP_S)
    for i in (0, 1999, 2000, 4499):
        machine = await store.get_machine(outcomes[i].machine_id)
        assert machine is not None
        assert machine.last_seen == later + timedelta(microseconds=i)
        assert machine.hostname == (f"renamed-{i}" if i % 1000 == 0 else f"bulk-host-{i}")
    rows = [r async for b in store.iter_inventory(later + timedelta(seconds=1)) for r in b]
    assert len(rows) == 4_500
    assert sum(r.hostname.startswith("renamed-") for r in rows) == 5


async def test_a_heartbeat_flushed_after_a_later_reenrollment_keeps_the_enrollments_facts(
    store: Store,
) -> None:
    """Received at 09:01 from the old image, flushed after the machine was re-imaged and
    enrolled again at 09:02: the machine is what the 09:02 enrollment says."""
    await _client_with_token(store)
    first = await store.enroll(_enrollment("pc-1", "agent-a"), now=NOW, gap_s=GAP_S)
    received, reenrolled = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    await store.enroll(
        _enrollment("pc-1-reimaged", "agent-b", previous="agent-a"), now=reenrolled, gap_s=GAP_S
    )
    await store.apply_heartbeats(
        [HeartbeatRecord(first.machine_id, received, received, "pc-1-old", None, None, "[]")],
        gap_s=GAP_S,
    )
    machine = await store.get_machine(first.machine_id)
    assert machine is not None
    assert (machine.hostname, machine.last_seen) == ("pc-1-reimaged", reenrolled)
    (row,) = [r async for b in store.iter_inventory(reenrolled + timedelta(seconds=1)) for r in b]
    assert (row.hostname, row.last_seen) == ("pc-1-reimaged", reenrolled)
    (before,) = [r async for b in store.iter_inventory(received + timedelta(seconds=1)) for r in b]
    assert before.hostname == "pc-1"


async def test_inventory_takes_facts_from_history_only_for_instants_before_they_changed(
    store: Store,
) -> None:
    await _client_with_token(store)
    enrolled = await store.enroll(_enrollment("pc-1", "agent-a"), now=NOW, gap_s=GAP_S)
    renamed = NOW + timedelta(days=3)
    await store.apply_heartbeats(
        [HeartbeatRecord(enrolled.machine_id, renamed, renamed, "pc-1-new", None, None, "[]")],
        gap_s=GAP_S,
    )
    for as_of, expected in (
        (renamed - timedelta(microseconds=1), ("pc-1", "pc", '[{"name":"antivirus"}]')),
        (renamed, ("pc-1-new", "pc", "[]")),
        (renamed + timedelta(days=1), ("pc-1-new", "pc", "[]")),
    ):
        (row,) = [r async for b in store.iter_inventory(as_of) for r in b]
        assert (row.hostname, row.kind, row.components_json) == expected, as_of
