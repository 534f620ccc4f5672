"""While an offboard runs: the agent's progress, its clock, and refusals the NOC can read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from collector.store.base import AuditFilter
from tests.collector.conftest import Harness
from tests.collector.test_offboarding import enrolled, offboard, report
from wire.times import format_instant


async def progress(
    fleet: Harness, agent_token: str, command_id: str, body: dict[str, Any], expect: int = 200
) -> dict[str, Any]:
    resp = await fleet.client.post(
        f"/v1/commands/{command_id}/progress",
        headers={"Authorization": f"Bearer {agent_token}"},
        json=body,
    )
    assert resp.status == expect, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


STEP = {"component": "antivirus", "argv": ["apt-get", "purge", "clamav"], "status": "ok"}


async def test_the_steps_an_agent_reports_while_it_runs_are_shown_on_the_command(
    fleet: Harness,
) -> None:
    agent, tech, _ = await enrolled(fleet)
    command = await offboard(fleet, agent["machine_id"], tech)
    started = format_instant(fleet.clock.now())
    running = {"component": "dns_protection", "argv": ["apt-get", "purge", "dnsmasq"]}
    answer = await progress(
        fleet,
        agent["agent_token"],
        command["command_id"],
        {"steps": [STEP], "running": {**running, "started_at": started}},
    )
    assert answer == {"command_id": command["command_id"], "state": "offboard_pending"}
    shown = await fleet.get(f"/v1/commands/{command['command_id']}", tech)
    assert shown["progress"]["steps"][0]["component"] == "antivirus"
    assert shown["progress"]["running"]["component"] == "dns_protection"
    assert shown["progress"]["at"] == format_instant(fleet.clock.now())


async def test_progress_about_another_agents_command_is_refused_and_audited(
    fleet: Harness,
) -> None:
    agent, tech, _admin = await enrolled(fleet)
    _, token = await fleet.add_client("Other Client")
    intruder = await fleet.enroll(token, "hw-intruder")
    command = await offboard(fleet, agent["machine_id"], tech)
    refused = await progress(
        fleet, intruder["agent_token"], command["command_id"], {"steps": [STEP]}, expect=403
    )
    assert refused["error"] == "not_your_command"
    assert (await fleet.get(f"/v1/commands/{command['command_id']}", tech))["progress"] is None
    entries = await fleet.store.list_audit(AuditFilter(action="command.progress_refused"))
    assert [entry.actor for _, entry in entries] == [intruder["agent_id"]]


async def test_progress_after_the_command_ended_changes_nothing(fleet: Harness) -> None:
    agent, tech, _ = await enrolled(fleet)
    command = await offboard(fleet, agent["machine_id"], tech)
    await report(fleet, agent["agent_token"], command["command_id"], "failed", [STEP])
    answer = await progress(fleet, agent["agent_token"], command["command_id"], {"steps": []})
    assert answer["state"] == "offboard_failed"
    assert (await fleet.get(f"/v1/commands/{command['command_id']}", tech))["progress"] is None


async def test_an_agent_ten_minutes_behind_is_flagged_and_its_refusal_is_readable(
    fleet: Harness,
) -> None:
    agent, tech, admin = await enrolled(fleet)
    behind = format_instant(fleet.clock.now() - timedelta(minutes=10))
    await fleet.heartbeat(agent["agent_token"], agent_time=behind)
    await fleet.flush()
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", admin)
    assert machine["clock_offset_s"] == -600.0
    assert "clock_skew" in machine["flags"]
    metrics = await (await fleet.client.get("/metrics")).text()
    assert "rmm_machines_clock_skewed 1.0" in metrics

    command = await offboard(fleet, agent["machine_id"], tech)
    reason = (
        "not yet valid: issued at 2026-03-02T09:00:00Z, this agent's clock says "
        "2026-03-02T08:50:00Z (600 s behind)"
    )
    resp = await fleet.client.post(
        f"/v1/commands/{command['command_id']}/result",
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
        json={"status": "rejected", "reason": reason, "agent_time": behind, "suppressed": 3},
    )
    assert resp.status == 200, await resp.text()
    shown = await fleet.get(f"/v1/commands/{command['command_id']}", tech)
    assert shown["state"] == "offboard_pending"  # a refusal never ends the command
    assert shown["rejections"] == 4  # this report and three identical ones it did not send
    assert shown["last_rejection"]["reason"] == reason
    entries = await fleet.store.list_audit(AuditFilter(action="command.rejected"))
    (_, entry), *_ = entries
    assert (entry.detail["agent_time"], entry.detail["repeats_not_reported"]) == (behind, 3)


async def test_a_clock_within_a_minute_is_not_flagged_and_a_bad_agent_time_is_refused(
    fleet: Harness,
) -> None:
    agent, _, admin = await enrolled(fleet)
    await fleet.heartbeat(
        agent["agent_token"], agent_time=format_instant(fleet.clock.now() + timedelta(seconds=59))
    )
    await fleet.flush()
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", admin)
    assert (machine["clock_offset_s"], machine["flags"]) == (59.0, [])
    resp = await fleet.client.post(
        "/v1/heartbeat",
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
        json={"components": [], "agent_time": "yesterday"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_body"
