"""The inventory's JSON is written by the database; it must be exactly what the collector writes
everywhere else, on both engines: strings escaped, instants in UTC with `Z` and a fraction only
when there is one, `null` for a machine never offboarded, components passed through as reported.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec

from collector.store.base import (
    AgentIdentity,
    Client,
    CommandResultRecord,
    EnrollRequestRecord,
    Facts,
    HeartbeatRecord,
    OffboardRequestRecord,
    Store,
)
from collector.tokens import hash_token

ENROLLED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GAP_S = 180.0
COMPONENTS = '[{"name":"antivirus","required":true,"status":"running","version":"4.18 \\"beta\\""}]'
AWKWARD_HOSTNAME = 'front "desk" \\ Zürich 受付 \t\n\x01 end'


async def _client_with_enrollment_token(store: Store) -> Client:
    client = await store.create_client("Acme Dental", now=ENROLLED, actor="test")
    await store.add_enrollment_token(
        client.client_id,
        hash_token("enroll"),
        expires_at=ENROLLED + timedelta(days=30),
        now=ENROLLED,
        actor="test",
    )
    return client


async def _enroll(store: Store, hardware_id: str, hostname: str, now: datetime) -> AgentIdentity:
    agent = f"agent-{hardware_id}"
    outcome = await store.enroll(
        EnrollRequestRecord(
            hash_token("enroll"),
            hardware_id,
            Facts(hostname, "Linux", "server", "[]"),
            agent,
            hash_token(agent),
            "1.0",
        ),
        now=now,
        gap_s=GAP_S,
    )
    return AgentIdentity(agent, outcome.machine_id, outcome.client_id)


async def _inventory_text(store: Store, as_of: datetime) -> bytes:
    chunks = [chunk async for chunk in store.iter_inventory_json(as_of, batch_size=1)]
    return b"[" + b",".join(chunks) + b"]"


async def test_the_inventory_json_is_byte_for_byte_what_the_collector_writes(
    store: Store,
) -> None:
    client = await _client_with_enrollment_token(store)
    awkward = await _enroll(store, "hw-awkward", "placeholder", ENROLLED)
    beat_at = ENROLLED + timedelta(minutes=1, microseconds=120_000)
    await store.apply_heartbeats(
        [
            HeartbeatRecord(
                awkward.machine_id, beat_at, beat_at, AWKWARD_HOSTNAME, None, None, COMPONENTS
            )
        ],
        gap_s=GAP_S,
    )
    # Enrolled 7 µs after the other, never seen again, offboarded a day later at a whole second.
    gone = await _enroll(store, "hw-gone", "old-server", ENROLLED + timedelta(microseconds=7))
    command, _ = await store.request_offboard(
        OffboardRequestRecord(gone.machine_id, "alice", "returned", "T-1"),
        now=ENROLLED + timedelta(hours=23),
    )
    offboarded_at = ENROLLED + timedelta(days=1)
    await store.record_command_result(
        gone, CommandResultRecord(command.command_id, "succeeded", None, "[]"), now=offboarded_at
    )

    as_of = ENROLLED + timedelta(days=2)
    expected = [
        {
            "machine_id": awkward.machine_id,
            "client_id": client.client_id,
            "hostname": AWKWARD_HOSTNAME,
            "kind": "server",
            "first_seen": ENROLLED,
            "last_seen": beat_at,
            "offboarded_at": None,
            "moved_at": None,
            "moved_to_client_id": None,
            "pending_kind": None,
            "components": msgspec.Raw(COMPONENTS.encode()),
        },
        {
            "machine_id": gone.machine_id,
            "client_id": client.client_id,
            "hostname": "old-server",
            "kind": "server",
            "first_seen": ENROLLED + timedelta(microseconds=7),
            "last_seen": ENROLLED + timedelta(microseconds=7),
            "offboarded_at": offboarded_at,
            "moved_at": None,
            "moved_to_client_id": None,
            "pending_kind": None,
            "components": msgspec.Raw(b"[]"),
        },
    ]
    expected.sort(key=lambda row: str(row["machine_id"]))
    text = await _inventory_text(store, as_of)
    rows = sorted(json.loads(text), key=lambda row: str(row["machine_id"]))
    assert msgspec.json.encode(rows) == msgspec.json.encode(
        [{**row, "components": json.loads(bytes(row["components"]))} for row in expected]
    )
    # Byte for byte: each object, wherever the stream put it.
    for row in expected:
        assert msgspec.json.encode(row) in text, row["hostname"]


async def test_a_machine_present_at_the_instant_asked_shows_that_instant_as_last_seen(
    store: Store,
) -> None:
    """Inside a run of presence the inventory reports as_of itself (at most one online window
    after the true last heartbeat), written like any other instant."""
    await _client_with_enrollment_token(store)
    machine = await _enroll(store, "hw-1", "reception-pc", ENROLLED)
    later = ENROLLED + timedelta(minutes=2)  # inside the online window: one run of presence
    await store.apply_heartbeats(
        [HeartbeatRecord(machine.machine_id, later, later, None, None, None, "[]")], gap_s=GAP_S
    )
    for as_of in (ENROLLED + timedelta(minutes=1), ENROLLED + timedelta(minutes=1, microseconds=5)):
        (row,) = json.loads(await _inventory_text(store, as_of))
        assert row["last_seen"] == msgspec.json.encode(as_of).decode().strip('"')
        assert row["first_seen"] == "2026-03-02T09:00:00Z"


async def test_an_empty_inventory_is_no_batches(store: Store) -> None:
    assert [chunk async for chunk in store.iter_inventory_json(ENROLLED)] == []
