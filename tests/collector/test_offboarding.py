"""Signed remote offboarding, collector side: held until the agent checks in, signed at each
delivery, ended only by the owning agent's report, and told in the audit log."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.appkeys import SIGNER
from collector.keys import KeyRing
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness
from wire.messages import SignedCommand
from wire.signing import parse_pin, verify_command
from wire.times import parse_instant


def pins(keyring: KeyRing) -> dict[str, Ed25519PublicKey]:
    return dict(parse_pin(k.pin) for k in keyring.load())


async def enrolled(fleet: Harness) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    _, token = await fleet.add_client()
    agent = await fleet.enroll(token, "hw-1", hostname="front-desk")
    tech = await fleet.api_token("technician", name="tina")
    admin = await fleet.api_token("admin", name="root-admin")
    return agent, tech, admin


async def offboard(
    fleet: Harness,
    machine_id: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
    status: int = 202,
) -> dict[str, Any]:
    resp = await fleet.client.post(
        f"/v1/machines/{machine_id}/offboard",
        headers=headers,
        json=body if body is not None else {"reason": "laptop returned", "ticket": "T-1042"},
    )
    assert resp.status == status, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def report(
    fleet: Harness,
    agent_token: str,
    command_id: str,
    status: str,
    steps: list[dict[str, Any]] | None = None,
    expect: int = 200,
    reason: str | None = None,
) -> dict[str, Any]:
    resp = await fleet.client.post(
        f"/v1/commands/{command_id}/result",
        headers={"Authorization": f"Bearer {agent_token}"},
        json={"status": status, "reason": reason, "steps": steps or []},
    )
    assert resp.status == expect, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def decode(command: dict[str, Any], keyring: KeyRing) -> Any:
    payload, _ = verify_command(msgspec.convert(command, SignedCommand), pins(keyring))
    return payload


async def test_offboard_request_is_pending_and_audited_with_who_why_and_ticket(
    fleet: Harness,
) -> None:
    agent, tech, admin = await enrolled(fleet)
    accepted = await offboard(fleet, agent["machine_id"], tech)
    assert accepted["state"] == "offboard_pending"
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", tech)
    assert machine["state"] == "offboard_pending"
    again = await offboard(fleet, agent["machine_id"], admin, {"reason": "double click"})
    assert again["command_id"] == accepted["command_id"]
    entries = await fleet.store.list_audit(AuditFilter(action="offboard.requested"))
    ((_, entry),) = entries
    assert entry.actor == "tina"
    assert entry.detail["reason"] == "laptop returned"
    assert entry.detail["ticket"] == "T-1042"


async def test_the_command_is_signed_at_delivery_and_redelivered_with_the_same_sequence(
    fleet: Harness, keyring: KeyRing
) -> None:
    agent, tech, _ = await enrolled(fleet)
    accepted = await offboard(fleet, agent["machine_id"], tech)
    fleet.clock.advance(hours=5)  # the agent was off; the request waited for it
    first = (await fleet.heartbeat(agent["agent_token"]))["commands"]
    assert [c["command_id"] for c in first] == [accepted["command_id"]]
    payload = decode(first[0], keyring)
    assert (payload.type, payload.agent_id, payload.machine_id) == (
        "offboard",
        agent["agent_id"],
        agent["machine_id"],
    )
    assert (payload.issuer, payload.reason, payload.ticket) == ("tina", "laptop returned", "T-1042")
    assert payload.sequence == 1
    issued, expires = parse_instant(payload.issued_at), parse_instant(payload.expires_at)
    assert issued == fleet.clock.now()
    assert timedelta(0) < expires - issued <= timedelta(minutes=15)

    fleet.clock.advance(minutes=1)
    second = (await fleet.heartbeat(agent["agent_token"]))["commands"]
    again = decode(second[0], keyring)
    assert again.sequence == 1 and again.command_id == payload.command_id
    assert parse_instant(again.expires_at) > expires
    command = await fleet.get(f"/v1/commands/{accepted['command_id']}", tech)
    assert command["delivery_count"] == 2


async def test_signing_uses_the_newest_key_the_agent_pins(fleet: Harness, keyring: KeyRing) -> None:
    old = keyring.load()[0]
    new = keyring.generate(parse_instant("2026-02-01T00:00:00Z"))
    agent, tech, _ = await enrolled(fleet)
    await offboard(fleet, agent["machine_id"], tech)
    fleet.app[SIGNER].keyring.load()
    only_old = await fleet.heartbeat(agent["agent_token"], key_ids=[old.key_id])
    assert only_old["commands"][0]["key_id"] == old.key_id
    both = await fleet.heartbeat(agent["agent_token"], key_ids=[old.key_id, new.key_id])
    assert both["commands"][0]["key_id"] == new.key_id
    unknown = await fleet.heartbeat(agent["agent_token"], key_ids=["ed25519-0000000000000000"])
    assert unknown["commands"] == []


async def test_success_offboards_the_machine_revokes_its_token_and_ends_billing_after(
    fleet: Harness,
) -> None:
    agent, tech, admin = await enrolled(fleet)
    accepted = await offboard(fleet, agent["machine_id"], tech)
    await fleet.heartbeat(agent["agent_token"])
    fleet.clock.advance(minutes=2)
    steps = [
        {
            "component": "antivirus",
            "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
            "status": "ok",
            "exit_code": 0,
            "output_tail": "Removing clamav-daemon",
        }
    ]
    done = await report(fleet, agent["agent_token"], accepted["command_id"], "succeeded", steps)
    assert done == {"command_id": accepted["command_id"], "state": "offboarded"}
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", tech)
    assert machine["state"] == "offboarded"
    assert machine["offboarded_at"] == "2026-03-02T09:02:00Z"
    command = await fleet.get(f"/v1/commands/{accepted['command_id']}", tech)
    assert command["state"] == "offboarded"
    assert command["result"]["steps"][0]["exit_code"] == 0
    revoked = await fleet.client.post(
        "/v1/heartbeat",
        json={"components": []},
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
    )
    assert revoked.status == 401
    fleet.clock.advance(days=1)
    inventory = await fleet.get("/v1/inventory?as_of=2026-03-03T00:00:00Z", admin)
    assert inventory["machines"][0]["offboarded_at"] == "2026-03-02T09:02:00Z"
    before = await fleet.get("/v1/inventory?as_of=2026-03-02T09:01:00Z", admin)
    assert before["machines"][0]["offboarded_at"] is None
    actions = [e.action for _, e in await fleet.store.list_audit(AuditFilter())]
    assert actions[:3] == ["offboard.completed", "command.delivered", "offboard.requested"]
    await offboard(fleet, agent["machine_id"], tech, status=409)


async def test_failure_keeps_the_failed_steps_and_a_technician_can_ask_again(
    fleet: Harness, keyring: KeyRing
) -> None:
    agent, tech, _ = await enrolled(fleet)
    first = await offboard(fleet, agent["machine_id"], tech)
    await fleet.heartbeat(agent["agent_token"])
    steps = [
        {
            "component": "backup",
            "argv": ["/opt/backup/uninstall"],
            "status": "failed",
            "exit_code": 3,
            "output_tail": "service busy",
        },
        {"component": "antivirus", "argv": ["true"], "status": "ok", "exit_code": 0},
    ]
    failed = await report(
        fleet,
        agent["agent_token"],
        first["command_id"],
        "failed",
        steps,
        reason="backup still running",
    )
    assert failed["state"] == "offboard_failed"
    assert (await fleet.get(f"/v1/machines/{agent['machine_id']}", tech))["state"] == (
        "offboard_failed"
    )
    ((_, entry),) = await fleet.store.list_audit(AuditFilter(action="offboard.failed"))
    assert [s["component"] for s in entry.detail["failed_steps"]] == ["backup"]
    retry = await offboard(fleet, agent["machine_id"], tech)
    assert retry["command_id"] != first["command_id"]
    delivered = (await fleet.heartbeat(agent["agent_token"]))["commands"]
    assert decode(delivered[0], keyring).sequence == 2


async def test_a_rejected_report_is_a_security_event_and_never_ends_the_command(
    fleet: Harness,
) -> None:
    agent, tech, _ = await enrolled(fleet)
    accepted = await offboard(fleet, agent["machine_id"], tech)
    await fleet.heartbeat(agent["agent_token"])
    answer = await report(
        fleet, agent["agent_token"], accepted["command_id"], "rejected", reason="bad_signature"
    )
    assert answer["state"] == "offboard_pending"
    ((_, entry),) = await fleet.store.list_audit(AuditFilter(action="command.rejected"))
    assert entry.actor == agent["agent_id"] and entry.detail["reason"] == "bad_signature"
    assert (await fleet.heartbeat(agent["agent_token"]))["commands"]
    metrics = await (await fleet.client.get("/metrics")).text()
    assert 'rmm_security_events_total{kind="command_rejected"} 1.0' in metrics


async def test_another_agent_cannot_report_on_the_command_and_the_attempt_is_audited(
    fleet: Harness,
) -> None:
    agent, tech, _ = await enrolled(fleet)
    _, other_token = await fleet.add_client("Globex")
    intruder = await fleet.enroll(other_token, "hw-evil")
    accepted = await offboard(fleet, agent["machine_id"], tech)
    refused = await report(
        fleet, intruder["agent_token"], accepted["command_id"], "succeeded", expect=403
    )
    assert refused["error"] == "not_your_command"
    command = await fleet.get(f"/v1/commands/{accepted['command_id']}", tech)
    assert command["state"] == "offboard_pending"
    ((_, entry),) = await fleet.store.list_audit(AuditFilter(action="command.result_refused"))
    assert entry.actor == intruder["agent_id"]
    await report(fleet, agent["agent_token"], "no-such-command", "succeeded", expect=404)


@pytest.mark.parametrize(
    ("role", "status"), [("viewer", 403), ("billing", 403), ("technician", 202), ("admin", 202)]
)
async def test_only_technicians_and_admins_may_offboard(
    fleet: Harness, role: str, status: int
) -> None:
    agent, _, _ = await enrolled(fleet)
    headers = await fleet.api_token(role, name=f"someone-{role}")  # type: ignore[arg-type]
    await offboard(fleet, agent["machine_id"], headers, status=status)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "invalid_body"),
        ({"reason": ""}, "invalid_body"),
        ({"reason": "   "}, "invalid_body"),
        ({"reason": "ok", "urgent": True}, "invalid_body"),
        ({"reason": 5}, "invalid_body"),
        ({"reason": "returned\x00"}, "invalid_body"),
    ],
    ids=[
        "missing-reason",
        "empty-reason",
        "blank-reason",
        "unknown-field",
        "wrong-type",
        "nul-in-reason",
    ],
)
async def test_bad_offboard_requests_are_400_and_change_nothing(
    fleet: Harness, body: dict[str, Any], error: str
) -> None:
    agent, tech, _ = await enrolled(fleet)
    answer = await offboard(fleet, agent["machine_id"], tech, body, status=400)
    assert answer["error"] == error
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", tech)
    assert machine["state"] == "online"
    assert await fleet.store.list_audit(AuditFilter(action="offboard.requested")) == []


async def test_offboarding_an_unknown_machine_is_404(fleet: Harness) -> None:
    _, tech, _ = await enrolled(fleet)
    answer = await offboard(fleet, "no-such-machine", tech, status=404)
    assert answer["error"] == "machine_not_found"


async def test_a_machine_enrolled_again_after_offboarding_starts_a_new_coverage_period(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    admin = await fleet.api_token("admin")
    agent = await fleet.enroll(token, "hw-1")
    accepted = await offboard(fleet, agent["machine_id"], admin)
    await fleet.heartbeat(agent["agent_token"])
    await report(fleet, agent["agent_token"], accepted["command_id"], "succeeded")
    fleet.clock.advance(days=20)
    # The agent removed itself, credential and all: a technician approves the new enrollment.
    await fleet.store.approve_reenroll(agent["machine_id"], now=fleet.clock.now(), actor="tina")
    again = await fleet.enroll(token, "hw-1")
    assert again["machine_id"] == agent["machine_id"]
    fleet.clock.advance(days=1)
    now = await fleet.get(f"/v1/inventory?as_of={fleet.clock.now().isoformat()}", admin)
    row = now["machines"][0]
    assert row["first_seen"] == "2026-03-22T09:00:00Z"
    assert row["offboarded_at"] is None
    past = await fleet.get("/v1/inventory?as_of=2026-03-10T00:00:00Z", admin)
    assert past["machines"][0]["first_seen"] == "2026-03-02T09:00:00Z"
    assert past["machines"][0]["offboarded_at"] == "2026-03-02T09:00:00Z"
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", admin)
    assert machine["state"] == "offline"
    assert machine["offboarded_at"] is None


async def test_exposure_lists_expired_machines_never_offboarded_and_stale_requests(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    viewer = await fleet.api_token("viewer")
    tech = await fleet.api_token("technician")
    gone = await fleet.enroll(token, "hw-gone", hostname="gone-dark")
    stuck = await fleet.enroll(token, "hw-stuck", hostname="never-back")
    await offboard(fleet, stuck["machine_id"], tech)
    fleet.clock.advance(days=8)
    report_8_days = await fleet.get("/v1/reports/exposure", viewer)
    assert report_8_days["expired_without_offboard"] == []
    assert [r["hostname"] for r in report_8_days["offboards_pending_over_7_days"]] == ["never-back"]
    fleet.clock.advance(days=30)
    later = await fleet.get("/v1/reports/exposure", viewer)
    assert sorted(r["hostname"] for r in later["expired_without_offboard"]) == [
        "gone-dark",
        "never-back",
    ]
    assert gone["machine_id"] in {r["machine_id"] for r in later["expired_without_offboard"]}


async def test_commands_are_listed_by_state(fleet: Harness) -> None:
    agent, tech, _ = await enrolled(fleet)
    accepted = await offboard(fleet, agent["machine_id"], tech)
    pending = await fleet.get("/v1/commands?state=offboard_pending", tech)
    assert [c["command_id"] for c in pending["commands"]] == [accepted["command_id"]]
    assert (await fleet.get("/v1/commands?state=offboarded", tech))["commands"] == []
    bad = await fleet.get("/v1/commands?state=done", tech, status=400)
    assert bad["error"] == "invalid_state"
    missing = await fleet.get("/v1/commands/nope", tech, status=404)
    assert missing["error"] == "command_not_found"


def test_pinned_lines_are_checked_against_their_key(keyring: KeyRing) -> None:
    with pytest.raises(ValueError, match="does not match"):
        parse_pin("ed25519-0123456789abcdef:" + base64.b64encode(bytes(32)).decode())
    with pytest.raises(ValueError, match="is '<key_id>:<base64"):
        parse_pin("just-a-key-id")
    key = keyring.generate(parse_instant("2026-01-01T00:00:00Z"))
    key_id, public = parse_pin(key.pin)
    assert key_id == key.key_id
    assert public.public_bytes_raw() == key.private_key.public_key().public_bytes_raw()
