"""The admin page for people: add (credentials and QR code shown once), disable, reset the
second factor; admins only, each change asking for a fresh code after ten minutes, audited
under the admin's name."""

from __future__ import annotations

from collector.store.base import AuditFilter
from tests.collector.web.conftest import BrowserFactory


async def test_an_admin_adds_a_person_and_sees_the_credentials_once(
    browser: BrowserFactory,
) -> None:
    ada = await (await browser()).sign_in("admin", name="ada")
    client_id, _ = await ada.harness.add_client("Acme")
    page = await ada.get("/people")
    assert "/people" in page.forms and "Acme" in page.text
    shown = await ada.post(
        "/people",
        {"csrf": page.csrf, "name": "tina", "role": "technician", "client": client_id},
        status=201,
    )
    assert "Shown once" in shown.text and "otpauth://totp/" in shown.html
    assert any(tag == "svg" for tag, _ in shown.tags)
    user = await ada.harness.store.find_user("tina")
    assert user is not None and user.role == "technician"
    assert user.clients == frozenset({client_id})
    listed = await ada.get("/people")
    assert "tina" in listed.text and "second factor not set up" in listed.text
    assert "otpauth://" not in listed.html
    (entry,) = [
        e
        for _, e in await ada.harness.store.list_audit(AuditFilter(action="user.created"))
        if e.target == "tina"
    ]
    assert entry.actor == "ada"


async def test_bad_people_forms_change_nothing(browser: BrowserFactory) -> None:
    ada = await (await browser()).sign_in("admin", name="ada")
    page = await ada.get("/people")
    for fields, status, message in (
        ({"name": "two words", "role": "viewer"}, 400, "no spaces"),
        ({"name": "bo", "role": "root"}, 400, "Choose one of the roles"),
        ({"name": "ada", "role": "viewer"}, 409, "already exists"),
        ({"name": "bo", "role": "viewer", "client": "no-such"}, 400, "no client"),
    ):
        refused = await ada.post("/people", {"csrf": page.csrf, **fields}, status=status)
        assert message in refused.text
    assert [u.name for u in await ada.harness.store.list_users()] == ["ada"]


async def test_disabling_and_resetting_mfa_from_the_page(browser: BrowserFactory) -> None:
    ada = await (await browser()).sign_in("admin", name="ada")
    tina = await (await browser()).sign_in("technician", name="tina")
    page = await ada.get("/people")
    reset = await ada.post("/people/tina/reset-mfa", {"csrf": page.csrf}, status=201)
    assert "New second factor for tina" in reset.text
    await tina.get("/", status=303)  # her session ended
    done = await ada.post("/people/tina/disable", {"csrf": page.csrf})
    assert done.headers["Location"] == "/people?done=disabled&name=tina"
    listed = await ada.get(done.headers["Location"])
    assert "tina is disabled; their sessions have ended." in listed.text
    assert "disabled 2026-03-02" in listed.text
    user = await ada.harness.store.find_user("tina")
    assert user is not None and user.disabled_at is not None
    mine = await ada.post("/people/ada/disable", {"csrf": page.csrf}, status=409)
    assert "Another admin" in mine.text
    await ada.post("/people/nobody/reset-mfa", {"csrf": page.csrf}, status=404)
    actions = sorted(
        e.action
        for _, e in await ada.harness.store.list_audit(AuditFilter(actor="ada"))
        if e.action.startswith("user.")
    )
    assert actions == ["user.disabled", "user.mfa_reset"]


async def test_people_changes_ask_for_a_fresh_code(browser: BrowserFactory) -> None:
    ada = await (await browser()).sign_in("admin", name="ada")
    page = await ada.get("/people")
    ada.harness.clock.advance(minutes=11)
    asked = await ada.post(
        "/people", {"csrf": page.csrf, "name": "bo", "role": "viewer"}, status=200
    )
    assert "Confirm it is you" in asked.text
    assert await ada.harness.store.find_user("bo") is None
    await ada.post(
        "/people",
        {"csrf": page.csrf, "name": "bo", "role": "viewer", "reauth_code": ada.code()},
        status=201,
    )
    assert await ada.harness.store.find_user("bo") is not None


async def test_only_admins_manage_people(browser: BrowserFactory) -> None:
    tech = await (await browser()).sign_in("technician", name="tina")
    await tech.get("/people", status=403)
    refused = await tech.post(
        "/people", {"csrf": tech.csrf, "name": "bo", "role": "admin"}, status=403
    )
    assert "may not do this" in refused.text
    assert "/people" not in (await tech.get("/")).links


async def test_a_person_limited_to_a_client_sees_only_its_machines(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    acme, acme_enrollment = await b.harness.add_client("Acme")
    _, other_enrollment = await b.harness.add_client("Globex")
    mine = (await b.harness.enroll(acme_enrollment, "hw-acme", hostname="acme-pc"))["machine_id"]
    theirs = (await b.harness.enroll(other_enrollment, "hw-glx", hostname="glx-pc"))["machine_id"]
    await b.sign_in("technician", name="cy", clients=(acme,))
    assert (await b.get("/", status=303)).headers["Location"] == "/machines"
    listed = await b.get("/machines")
    assert "acme-pc" in listed.text and "glx-pc" not in listed.text
    elsewhere = await b.get(f"/machines?client={theirs}")
    assert "glx-pc" not in elsewhere.text
    await b.get(f"/machines/{mine}")
    await b.get(f"/machines/{theirs}", status=404)
    await b.get(f"/machines/{theirs}/offboard", status=404)
    form = await b.get(f"/machines/{mine}/offboard")
    await b.post(
        f"/machines/{theirs}/offboard",
        {"csrf": form.csrf, "reason": "x", "confirm": theirs},
        status=404,
    )
    assert not await b.harness.store.list_audit(AuditFilter(action="offboard.requested"))


async def test_a_limited_admin_gets_no_fleet_wide_pages(browser: BrowserFactory) -> None:
    b = await browser()
    acme, _ = await b.harness.add_client("Acme")
    await b.sign_in("admin", name="al", clients=(acme,))
    for path in ("/clients", "/audit", "/people"):
        refused = await b.get(path, status=403)
        assert "limited to some clients" in refused.text
    links = (await b.get("/machines")).links
    assert "/clients" not in links and "/audit" not in links and "/people" not in links
