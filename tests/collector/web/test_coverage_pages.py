"""Coverage pages: a client's unmanaged devices (dismissed with a reason through a CSRF form),
the printable monthly statement linked from the client's pages, and a clone's two copies."""

from __future__ import annotations

from typing import Any

from collector.clones import detect_clones
from collector.store.base import AuditFilter
from tests.collector.web.conftest import Browser, BrowserFactory

PRINTER = "3c:2a:f4:10:20:30"


async def office(browser: BrowserFactory, role: str = "technician") -> tuple[Browser, str, Any]:
    b = await browser()
    client_id, enrollment = await b.harness.add_client("Acme Dental")
    agent = await b.harness.enroll(enrollment, "hw-1", hostname="front-desk")
    await b.harness.heartbeat(
        agent["agent_token"],
        hostname="front-desk",
        network={
            "macs": ["02:00:00:00:00:01"],
            "neighbors": [{"ip": "192.168.1.50", "mac": PRINTER}],
        },
    )
    await b.harness.flush()
    await b.sign_in(role, name="tina")  # type: ignore[arg-type]
    return b, client_id, agent


async def test_a_technician_dismisses_a_printer_with_a_reason_and_can_list_it_again(
    browser: BrowserFactory,
) -> None:
    b, client_id, _ = await office(browser)
    page = await b.get(f"/clients/{client_id}/unmanaged")
    assert PRINTER in page.text and "192.168.1.50" in page.text
    action = f"/clients/{client_id}/unmanaged/{PRINTER}/dismiss"
    assert action in page.forms
    no_reason = await b.post(action, {"csrf": b.csrf, "reason": " "}, status=400)
    assert "Say why this needs no agent" in no_reason.text
    forged = await b.post(action, {"csrf": "forged", "reason": "printer"}, status=403)
    assert "security token" in forged.text
    assert await b.harness.store.dismissed_devices(client_id) == []
    done = await b.post(action, {"csrf": b.csrf, "reason": "reception printer"})
    assert done.headers["Location"] == f"/clients/{client_id}/unmanaged?done=dismissed"
    after = await b.get(done.headers["Location"])
    assert "Unmanaged (0)" in after.text and "reception printer" in after.text
    ((_, entry),) = await b.harness.store.list_audit(AuditFilter(action="device.dismissed"))
    assert (entry.actor, entry.detail["reason"]) == ("tina", "reception printer")
    await b.post(f"/clients/{client_id}/unmanaged/{PRINTER}/restore", {"csrf": b.csrf})
    assert "Unmanaged (1)" in (await b.get(f"/clients/{client_id}/unmanaged")).text


async def test_a_viewer_sees_the_devices_but_gets_no_dismiss_form(
    browser: BrowserFactory,
) -> None:
    b, client_id, _ = await office(browser, role="viewer")
    page = await b.get(f"/clients/{client_id}/unmanaged")
    assert PRINTER in page.text
    assert not [f for f in page.forms if f.endswith("/dismiss")]
    refused = await b.post(
        f"/clients/{client_id}/unmanaged/{PRINTER}/dismiss",
        {"csrf": b.csrf, "reason": "printer"},
        status=403,
    )
    assert "devices.dismiss" in refused.text
    await b.get("/clients/no-such-client/unmanaged", status=404)


async def test_the_statement_is_linked_from_the_clients_pages_and_prints_the_summary(
    browser: BrowserFactory,
) -> None:
    b, client_id, _ = await office(browser, role="admin")
    for path in (f"/clients/{client_id}", f"/machines?client={client_id}"):
        assert f"/clients/{client_id}/coverage" in (await b.get(path)).links
    b.harness.clock.advance(hours=2)
    page = await b.get(f"/clients/{client_id}/coverage?month=2026-03")
    assert "Coverage statement: Acme Dental, 2026-03" in page.text
    assert "1 of 1 machine protected 100% of the month so far" in page.text
    assert PRINTER in page.text
    bad = await b.get(f"/clients/{client_id}/coverage?month=March", status=400)
    assert "YYYY-MM" in bad.text


async def test_a_clone_is_flagged_on_the_machine_rows_and_resolved_on_its_page(
    browser: BrowserFactory,
) -> None:
    b, client_id, agent = await office(browser)
    machine_id = agent["machine_id"]
    for hostname in ("front-desk-copy", "front-desk"):
        b.harness.clock.advance(minutes=1)
        await b.harness.heartbeat(agent["agent_token"], hostname=hostname)
        await b.harness.flush()
    await detect_clones(b.harness.app)
    rows = await b.get(f"/machines?client={client_id}")
    assert f"/machines/{machine_id}/clone" in rows.links and "clone suspected" in rows.text
    machine = await b.get(f"/machines/{machine_id}")
    assert "Clone suspected" in machine.text
    page = await b.get(f"/machines/{machine_id}/clone")
    assert "front-desk-copy" in page.text
    action = f"/machines/{machine_id}/clone/resolve"
    missing = await b.post(action, {"csrf": b.csrf, "reason": "x"}, status=400)
    assert "Choose the copy" in missing.text
    await b.post(action, {"csrf": b.csrf, "keep": "1", "reason": "copy is a new PC"})
    resolved = await b.get(f"/machines/{machine_id}/clone")
    assert "Resolved by tina" in resolved.text
    assert "clone suspected" not in (await b.get(f"/machines?client={client_id}")).text
