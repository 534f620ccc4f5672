"""Offboarding from the machine page: reason required, ticket optional, a confirmation naming the
machine and client; then the follow page, which a script keeps current through its JSON."""

from __future__ import annotations

from typing import Any

from collector.store.base import AuditFilter, CommandFilter
from tests.collector.web.conftest import Browser, BrowserFactory


async def setup(browser: BrowserFactory) -> tuple[Browser, dict[str, Any]]:
    b = await browser()
    _, enrollment = await b.harness.add_client("Acme Dental")
    agent = await b.harness.enroll(enrollment, "hw-1", hostname="front-desk")
    await b.sign_in("technician", name="tina")
    return b, agent


async def test_the_form_names_the_machine_and_client_and_the_request_is_audited(
    browser: BrowserFactory,
) -> None:
    b, agent = await setup(browser)
    machine_id = agent["machine_id"]
    form = await b.get(f"/machines/{machine_id}/offboard")
    assert "Offboard front-desk of Acme Dental?" in form.text
    assert "Yes, offboard front-desk of Acme Dental , then remove its agent." in form.text
    assert "the order names none, so the agent runs no uninstall step" in form.text
    answer = await b.post(
        f"/machines/{machine_id}/offboard",
        {"csrf": form.csrf, "reason": "laptop returned", "ticket": "T-1042", "confirm": machine_id},
    )
    (command,) = await b.harness.store.list_commands(CommandFilter(machine_id=machine_id))
    assert answer.headers["Location"] == f"/commands/{command.command_id}"
    assert (command.issuer, command.reason, command.ticket) == ("tina", "laptop returned", "T-1042")
    ((_, entry),) = await b.harness.store.list_audit(AuditFilter(action="offboard.requested"))
    assert entry.actor == "tina" and entry.detail["ticket"] == "T-1042"
    machine = await b.harness.get(f"/v1/machines/{machine_id}", await b.harness.api_token("viewer"))
    assert machine["state"] == "offboard_pending"
    page = await b.get(f"/machines/{machine_id}")
    assert f"/commands/{command.command_id}" in page.links
    assert f"/machines/{machine_id}/offboard" not in page.links


async def test_a_reason_and_the_confirmation_are_required(browser: BrowserFactory) -> None:
    b, agent = await setup(browser)
    machine_id = agent["machine_id"]
    path = f"/machines/{machine_id}/offboard"
    no_reason = await b.post(path, {"csrf": b.csrf, "reason": "  ", "confirm": machine_id}, 400)
    assert "Say why the machine is offboarded" in no_reason.text
    unconfirmed = await b.post(path, {"csrf": b.csrf, "reason": "returned", "ticket": "T-9"}, 400)
    assert "Tick the box" in unconfirmed.text
    assert 'value="T-9"' in unconfirmed.html and ">returned</textarea>" in unconfirmed.html
    wrong_box = await b.post(
        path, {"csrf": b.csrf, "reason": "returned", "confirm": "another-machine"}, 400
    )
    assert "Tick the box" in wrong_box.text
    too_long = await b.post(
        path, {"csrf": b.csrf, "reason": "x" * 1001, "confirm": machine_id}, status=400
    )
    assert "under 1000 characters" in too_long.text
    nul = await b.post(
        path, {"csrf": b.csrf, "reason": "returned\x00", "confirm": machine_id}, status=400
    )
    assert "cannot contain a NUL character" in nul.text
    assert await b.harness.store.list_commands(CommandFilter(machine_id=machine_id)) == []


async def test_asking_twice_follows_the_same_command_and_offboarded_is_final(
    browser: BrowserFactory,
) -> None:
    b, agent = await setup(browser)
    machine_id = agent["machine_id"]
    body = {"csrf": b.csrf, "reason": "returned", "confirm": machine_id}
    first = await b.post(f"/machines/{machine_id}/offboard", body)
    second_form = await b.get(f"/machines/{machine_id}/offboard")
    assert "already pending (asked by tina)" in second_form.text
    second = await b.post(f"/machines/{machine_id}/offboard", body)
    assert first.headers["Location"] == second.headers["Location"]
    command_id = first.headers["Location"].rsplit("/", 1)[1]
    await b.harness.heartbeat(agent["agent_token"])
    await b.harness.client.post(
        f"/v1/commands/{command_id}/result",
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
        json={"status": "succeeded", "steps": []},
    )
    await b.get(f"/machines/{machine_id}/offboard", status=409)
    await b.post(f"/machines/{machine_id}/offboard", body, status=409)


async def test_the_follow_page_and_its_json_track_the_command_to_offboarded(
    browser: BrowserFactory,
) -> None:
    b, agent = await setup(browser)
    machine_id = agent["machine_id"]
    answer = await b.post(
        f"/machines/{machine_id}/offboard",
        {"csrf": b.csrf, "reason": "returned", "confirm": machine_id},
    )
    follow_path = answer.headers["Location"]
    page = await b.get(follow_path)
    assert "State: Offboard pending" in page.text
    assert '<meta http-equiv="refresh" content="5">' in page.html  # inside <noscript>
    assert '<script src="/static/live.js' in page.html
    assert f'data-live-url="{follow_path}/live"' in page.html

    async def live() -> dict[str, Any]:
        resp = await b.client.get(f"{follow_path}/live")
        assert resp.status == 200
        assert resp.headers["Content-Security-Policy"]
        return await resp.json()  # type: ignore[no-any-return]

    before = await live()
    assert (before["state"], before["final"], before["delivered_at"]) == (
        "offboard_pending",
        False,
        None,
    )
    b.harness.clock.advance(minutes=1)
    await b.harness.heartbeat(agent["agent_token"])
    delivered = await live()
    assert delivered["delivery_count"] == 1 and delivered["delivered_at_text"] != "—"
    steps = [
        {
            "component": "antivirus",
            "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
            "status": "ok",
            "exit_code": 0,
            "output_tail": "Removing clamav-daemon",
        }
    ]
    resp = await b.harness.client.post(
        f"/v1/commands/{delivered['command_id']}/result",
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
        json={"status": "succeeded", "steps": steps},
    )
    assert resp.status == 200
    done = await live()
    assert (done["state"], done["state_label"], done["final"]) == (
        "offboarded",
        "Offboarded",
        True,
    )
    assert done["machine_state"] == "offboarded"
    assert done["result"]["steps"][0]["output_tail"] == "Removing clamav-daemon"
    final_page = await b.get(follow_path)
    assert "State: Offboarded" in final_page.text and "Finished." in final_page.text
    assert "apt-get -y purge clamav-daemon" in final_page.text
    assert 'http-equiv="refresh"' not in final_page.html


async def test_the_live_json_keeps_to_roles_and_sessions(browser: BrowserFactory) -> None:
    b, _ = await setup(browser)
    missing = await b.client.get("/commands/nope/live")
    assert missing.status == 404 and (await missing.json())["error"] == "command_not_found"
    stranger = await browser()
    resp = await stranger.client.get("/commands/nope/live")
    assert resp.status == 401 and (await resp.json())["error"] == "signed_out"
    await stranger.get("/commands/nope", status=303)
