"""No takeover by re-enrollment: an enrollment token plus a hardware id never takes a machine over.

The attack, as reproduced against a running collector: an outsider with a client's enrollment
token and a machine's hardware id (readable by any local user) enrolled as that machine, got its
identity, had the genuine agent's token revoked, received the pending offboard and marked the
machine offboarded with an empty "succeeded". Each step of it is refused here, on both stores.
"""

from __future__ import annotations

from typing import Any

from collector.store.base import AuditFilter
from tests.collector.conftest import Harness
from tests.collector.test_offboarding import decode, offboard, report


async def enroll_raw(fleet: Harness, token: str, hardware_id: str, **fields: Any) -> Any:
    body = {
        "enrollment_token": token,
        "hardware_id": hardware_id,
        "hostname": fields.pop("hostname", "intruder"),
        "os": "Linux 6.1",
        "kind": "pc",
        **fields,
    }
    resp = await fleet.client.post("/v1/enroll", json=body)
    return resp.status, await resp.json()


async def test_known_hardware_without_proof_is_held_and_the_genuine_agent_keeps_working(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    admin = await fleet.api_token("admin")
    genuine = await fleet.enroll(token, "hw-1", hostname="front-desk")

    status, answer = await enroll_raw(fleet, token, "hw-1")

    assert status == 202
    assert (
        answer
        == {
            "state": "awaiting_approval",
            "detail": answer["detail"],
        }
        or answer["state"] == "awaiting_approval"
    )
    assert "agent_token" not in answer and "machine_id" not in answer
    await fleet.heartbeat(genuine["agent_token"])
    machine = await fleet.get(f"/v1/machines/{genuine['machine_id']}", admin)
    assert machine["hostname"] == "front-desk"
    held = await fleet.get("/v1/enrollments/held", admin)
    assert [(h["machine_id"], h["hostname"]) for h in held["held"]] == [
        (genuine["machine_id"], "intruder")
    ]
    entries = await fleet.store.list_audit(AuditFilter(action="machine.reenroll_held"))
    assert [e.target for _, e in entries] == [genuine["machine_id"]]


async def test_a_pending_offboard_is_never_handed_to_an_intruder_and_an_empty_success_ends_nothing(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician", name="tina")
    genuine = await fleet.enroll(token, "hw-1")
    await fleet.heartbeat(
        genuine["agent_token"],
        components=[
            {"name": "rmm", "status": "running", "version": "1"},
            {"name": "antivirus", "status": "running", "version": "1"},
        ],
    )
    await fleet.flush()
    pending = await offboard(fleet, genuine["machine_id"], tech)

    status, _ = await enroll_raw(fleet, token, "hw-1")
    assert status == 202
    # The genuine agent still receives its command; an empty "succeeded" is not an offboard.
    delivered = (await fleet.heartbeat(genuine["agent_token"]))["commands"]
    assert [c["command_id"] for c in delivered] == [pending["command_id"]]
    answer = await report(fleet, genuine["agent_token"], pending["command_id"], "succeeded")
    assert answer["state"] == "offboard_failed"
    command = await fleet.get(f"/v1/commands/{pending['command_id']}", tech)
    assert "antivirus" in command["result"]["reason"]


async def test_a_technician_approval_lets_the_hardware_enroll_again_once_within_a_day(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician", name="tina")
    genuine = await fleet.enroll(token, "hw-1")
    assert (await enroll_raw(fleet, token, "hw-1"))[0] == 202

    resp = await fleet.client.post(
        f"/v1/machines/{genuine['machine_id']}/approve-reenroll", headers=tech
    )
    assert resp.status == 200, await resp.text()
    approval = await resp.json()
    assert approval["held"]["hostname"] == "intruder"
    assert approval["approved_until"] == "2026-03-03T09:00:00Z"

    status, again = await enroll_raw(fleet, token, "hw-1", hostname="reimaged")
    assert status == 201
    assert again["machine_id"] == genuine["machine_id"]
    old = await fleet.client.post(
        "/v1/heartbeat",
        json={"components": []},
        headers={"Authorization": f"Bearer {genuine['agent_token']}"},
    )
    assert old.status == 401
    # The approval was used: the next copy of the hardware is held again.
    assert (await enroll_raw(fleet, token, "hw-1"))[0] == 202
    approvals = await fleet.store.list_audit(AuditFilter(action="machine.reenroll_approved"))
    assert [e.actor for _, e in approvals] == ["tina"]


async def test_an_approval_lapses_after_24_hours(fleet: Harness) -> None:
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    genuine = await fleet.enroll(token, "hw-1")
    resp = await fleet.client.post(
        f"/v1/machines/{genuine['machine_id']}/approve-reenroll", headers=tech
    )
    assert resp.status == 200
    fleet.clock.advance(hours=24)
    assert (await enroll_raw(fleet, token, "hw-1"))[0] == 202


async def test_only_technicians_and_admins_approve_and_only_known_machines(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    genuine = await fleet.enroll(token, "hw-1")
    for role, expected in (("viewer", 403), ("billing", 403), ("technician", 200)):
        headers = await fleet.api_token(role)  # type: ignore[arg-type]
        resp = await fleet.client.post(
            f"/v1/machines/{genuine['machine_id']}/approve-reenroll", headers=headers
        )
        assert resp.status == expected, role
    admin = await fleet.api_token("admin")
    resp = await fleet.client.post("/v1/machines/no-such/approve-reenroll", headers=admin)
    assert resp.status == 404
    assert (await resp.json())["error"] == "machine_not_found"
    agent = await fleet.client.post(
        f"/v1/machines/{genuine['machine_id']}/approve-reenroll",
        headers={"Authorization": f"Bearer {genuine['agent_token']}"},
    )
    assert agent.status in (401, 403)


async def test_commands_open_for_the_old_agent_end_when_the_machine_enrolls_again(
    fleet: Harness,
) -> None:
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    genuine = await fleet.enroll(token, "hw-1")
    pending = await offboard(fleet, genuine["machine_id"], tech)
    again = await fleet.enroll(token, "hw-1", previous_agent_token=genuine["agent_token"])
    command = await fleet.get(f"/v1/commands/{pending['command_id']}", tech)
    assert command["state"] == "cancelled"
    assert (await fleet.heartbeat(again["agent_token"]))["commands"] == []


async def test_a_re_enrolled_machine_can_be_offboarded_again_with_a_higher_sequence(
    fleet: Harness, keyring: Any
) -> None:
    _, token = await fleet.add_client()
    tech = await fleet.api_token("technician")
    genuine = await fleet.enroll(token, "hw-1")
    first = await offboard(fleet, genuine["machine_id"], tech)
    delivered = (await fleet.heartbeat(genuine["agent_token"]))["commands"]
    first_sequence = decode(delivered[0], keyring).sequence
    # `enroll --force`: the agent keeps its command ledger, so sequences must never go down.
    again = await fleet.enroll(token, "hw-1", previous_agent_token=genuine["agent_token"])
    second = await offboard(fleet, genuine["machine_id"], tech)
    assert second["command_id"] != first["command_id"]
    delivered = (await fleet.heartbeat(again["agent_token"]))["commands"]
    assert decode(delivered[0], keyring).sequence > first_sequence
    steps = [{"component": "rmm", "argv": ["true"], "status": "ok", "exit_code": 0}]
    answer = await report(fleet, again["agent_token"], second["command_id"], "succeeded", steps)
    assert answer["state"] == "offboarded"
