"""Two-person offboarding, collector side: an order waits for the approvals its agent requires.

The agent is the one that enforces (tests/agent/test_two_person_offboard.py plays an attacker who
owns the collector); here the collector keeps the order bytes, checks each approval before it
keeps it, shows who signed, and delivers only what the agent will obey, on both stores.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.keys import KeyRing
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness
from tests.collector.test_offboarding import decode, offboard
from wire.messages import SignedCommand
from wire.orders import decode_order, sign_order, verify_order
from wire.signing import key_id_for, parse_pin, pin_line
from wire.times import parse_instant

ALICE = Ed25519PrivateKey.generate()
BOB = Ed25519PrivateKey.generate()
MALLORY = Ed25519PrivateKey.generate()  # a key the agent does not pin
COMPONENTS = [
    {"name": "rmm", "status": "running", "version": "1"},
    {"name": "antivirus", "status": "running", "version": "4"},
]


async def two_person_machine(fleet: Harness) -> tuple[dict[str, Any], dict[str, str]]:
    """A machine whose agent pins Alice's and Bob's keys and requires both."""
    _, token = await fleet.add_client()
    agent = await fleet.enroll(token, "hw-1", hostname="front-desk")
    await beat(fleet, agent)
    await fleet.flush()
    return agent, await fleet.api_token("technician", name="tina")


async def beat(fleet: Harness, agent: dict[str, Any], approvals: int = 2) -> list[Any]:
    answer = await fleet.heartbeat(
        agent["agent_token"],
        components=COMPONENTS,
        offboard_approvals=approvals,
        operator_key_ids=[key_id_for(ALICE.public_key()), key_id_for(BOB.public_key())],
    )
    return answer["commands"]  # type: ignore[no-any-return]


async def approve(
    fleet: Harness,
    headers: dict[str, str],
    command: dict[str, Any],
    key: Ed25519PrivateKey,
    status: int = 200,
    **overrides: Any,
) -> dict[str, Any]:
    approval = sign_order(base64.b64decode(command["order"]), key)
    body = {
        "key_id": approval.key_id,
        "signature": approval.signature,
        "public_key": pin_line(key.public_key()),
        **overrides,
    }
    resp = await fleet.client.post(
        f"/v1/commands/{command['command_id']}/approvals", json=body, headers=headers
    )
    assert resp.status == status, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_an_offboard_waits_for_two_operators_and_is_delivered_with_both_signatures(
    fleet: Harness, keyring: KeyRing
) -> None:
    agent, tech = await two_person_machine(fleet)
    requested = await offboard(fleet, agent["machine_id"], tech)
    assert requested["state"] == "awaiting_approval"
    order = decode_order(base64.b64decode(requested["order"]))
    assert (order.machine_id, order.agent_id, order.requester) == (
        agent["machine_id"],
        agent["agent_id"],
        "tina",
    )
    assert order.components == ["antivirus", "rmm"]
    assert await beat(fleet, agent) == []

    after_alice = await approve(fleet, tech, requested, ALICE)
    assert after_alice["state"] == "awaiting_approval"
    after_mallory = await approve(fleet, tech, requested, MALLORY)
    assert after_mallory["state"] == "awaiting_approval"
    counted = {a["key_id"]: a["counted"] for a in after_mallory["approvals"]}
    assert counted == {
        key_id_for(ALICE.public_key()): True,
        key_id_for(MALLORY.public_key()): False,
    }
    assert await beat(fleet, agent) == []

    after_bob = await approve(fleet, tech, requested, BOB)
    assert after_bob["state"] == "offboard_pending"
    (delivered,) = await beat(fleet, agent)
    payload = decode(delivered, keyring)
    envelope = msgspec.convert(delivered, SignedCommand)
    pinned = dict(parse_pin(pin_line(k.public_key())) for k in (ALICE, BOB))
    verified = verify_order(
        envelope.order,
        envelope.approvals,
        order_sha256=payload.order_sha256,
        command_id=payload.command_id,
        agent_id=agent["agent_id"],
        machine_id=agent["machine_id"],
        pinned=pinned,
        required=2,
        now=fleet.clock.now(),
    )
    assert verified.order_id == order.order_id
    entries = await fleet.store.list_audit(AuditFilter(action="offboard.approved"))
    assert sorted(e.detail["key_id"] for _, e in entries) == sorted(
        key_id_for(k.public_key()) for k in (ALICE, BOB, MALLORY)
    )


async def test_the_same_key_twice_counts_once(fleet: Harness) -> None:
    agent, tech = await two_person_machine(fleet)
    requested = await offboard(fleet, agent["machine_id"], tech)
    await approve(fleet, tech, requested, ALICE)
    again = await approve(fleet, tech, requested, ALICE)
    assert again["state"] == "awaiting_approval"
    assert len(again["approvals"]) == 1


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"signature": base64.b64encode(b"\0" * 64).decode()}, "bad_signature"),
        ({"signature": "not base64!"}, "bad_signature"),
        ({"public_key": pin_line(BOB.public_key())}, "invalid_key"),
        ({"public_key": None}, "unknown_key"),
        ({"public_key": "ed25519-0000:AAAA"}, "invalid_key"),
        ({"extra": 1}, "invalid_body"),
    ],
)
async def test_an_approval_that_does_not_verify_is_refused_and_changes_nothing(
    fleet: Harness, overrides: dict[str, Any], error: str
) -> None:
    agent, tech = await two_person_machine(fleet)
    requested = await offboard(fleet, agent["machine_id"], tech)
    answer = await approve(fleet, tech, requested, ALICE, status=400, **overrides)
    assert answer["error"] == error
    command = await fleet.get(f"/v1/commands/{requested['command_id']}", tech)
    assert command["approvals"] == []
    assert command["state"] == "awaiting_approval"


async def test_only_technicians_and_admins_approve_and_only_open_commands(
    fleet: Harness,
) -> None:
    agent, tech = await two_person_machine(fleet)
    requested = await offboard(fleet, agent["machine_id"], tech)
    viewer = await fleet.api_token("viewer")
    await approve(fleet, viewer, requested, ALICE, status=403)
    missing = {**requested, "command_id": "no-such-command"}
    assert (await approve(fleet, tech, missing, ALICE, status=404))["error"] == (
        "command_not_found"
    )


async def test_a_registered_operator_is_named_beside_the_signature(fleet: Harness) -> None:
    agent, tech = await two_person_machine(fleet)
    admin = await fleet.api_token("admin")
    resp = await fleet.client.post(
        "/v1/operators",
        json={"name": "Alice", "public_key": pin_line(ALICE.public_key())},
        headers=admin,
    )
    assert resp.status == 201, await resp.text()
    again = await fleet.client.post(
        "/v1/operators",
        json={"name": "Eve", "public_key": pin_line(ALICE.public_key())},
        headers=admin,
    )
    assert again.status == 409
    blank = await fleet.client.post(
        "/v1/operators",
        json={"name": "   ", "public_key": pin_line(BOB.public_key())},
        headers=admin,
    )
    assert blank.status == 400 and (await blank.json())["error"] == "invalid_body"
    listed = await fleet.get("/v1/operators", admin)
    assert [o["name"] for o in listed["operators"]] == ["Alice"]  # the blank one changed nothing
    refused = await fleet.client.post(
        "/v1/operators",
        json={"name": "Eve", "public_key": pin_line(BOB.public_key())},
        headers=tech,
    )
    assert refused.status == 403
    requested = await offboard(fleet, agent["machine_id"], tech)
    # Registered: the public line need not be sent again.
    signed = await approve(fleet, tech, requested, ALICE, public_key=None)
    assert signed["approvals"][0]["operator"] == "Alice"


async def test_an_agent_in_single_signature_mode_gets_the_command_at_once_without_an_order(
    fleet: Harness, keyring: KeyRing
) -> None:
    """`offboard_approvals = 0`: the collector's signature alone, as before orders existed."""
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    agent = await fleet.enroll(token, "hw-1")
    await beat(fleet, agent, approvals=0)
    requested = await offboard(fleet, agent["machine_id"], tech)
    assert requested["state"] == "offboard_pending"
    (delivered,) = await beat(fleet, agent, approvals=0)
    assert decode(delivered, keyring).order_sha256 is None
    assert "order" not in delivered or delivered["order"] is None


async def test_an_agent_that_starts_requiring_two_holds_back_a_pending_order(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    agent = await fleet.enroll(token, "hw-1")
    requested = await offboard(fleet, agent["machine_id"], tech)
    assert requested["state"] == "offboard_pending"  # the agent has not said yet
    assert await beat(fleet, agent) == []
    command = await fleet.get(f"/v1/commands/{requested['command_id']}", tech)
    assert command["state"] == "awaiting_approval"
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", tech)
    assert machine["state"] == "awaiting_approval"


async def test_single_offboards_beyond_the_hourly_breaker_are_refused(
    make_harness: Any, keyring: KeyRing
) -> None:
    keyring.generate(parse_instant("2026-01-01T00:00:00Z"))
    fleet = await make_harness(keys_dir=str(keyring.folder), offboard_requests_per_hour=2)
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    agents = [await fleet.enroll(token, f"hw-{n}") for n in range(3)]
    await offboard(fleet, agents[0]["machine_id"], tech)
    await offboard(fleet, agents[1]["machine_id"], tech)
    refused = await offboard(fleet, agents[2]["machine_id"], tech, status=429)
    assert refused["error"] == "offboard_breaker_open"
    fleet.clock.advance(hours=1, seconds=1)
    await offboard(fleet, agents[2]["machine_id"], tech)


async def test_a_whole_client_is_one_bulk_order_signed_and_approved_in_one_go(
    fleet: Harness,
) -> None:
    client_id, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    agents = [await fleet.enroll(token, f"hw-{n}") for n in range(3)]
    for agent in agents:
        await beat(fleet, agent)
    await fleet.flush()
    resp = await fleet.client.post(
        f"/v1/clients/{client_id}/offboard",
        json={"reason": "contract ended", "expected_count": 4},
        headers=tech,
    )
    assert resp.status == 409  # the requester saw another count: nothing ordered
    resp = await fleet.client.post(
        f"/v1/clients/{client_id}/offboard",
        json={"reason": "contract ended", "expected_count": 3},
        headers=tech,
    )
    assert resp.status == 202, await resp.text()
    batch = await resp.json()
    assert len(batch["commands"]) == 3
    for signer in (ALICE, BOB):
        approvals = [
            {
                "command_id": c["command_id"],
                **{
                    "key_id": (a := sign_order(base64.b64decode(c["order"]), signer)).key_id,
                    "signature": a.signature,
                    "public_key": pin_line(signer.public_key()),
                },
            }
            for c in batch["commands"]
        ]
        resp = await fleet.client.post("/v1/approvals", json={"approvals": approvals}, headers=tech)
        assert resp.status == 200
    shown = await fleet.get(f"/v1/batches/{batch['batch_id']}", tech)
    assert {c["state"] for c in shown["commands"]} == {"offboard_pending"}
    for agent in agents:
        assert len(await beat(fleet, agent)) == 1
