"""Admin pages: clients with enrollment tokens shown once, and the audit log with filters."""

from __future__ import annotations

import re

from collector.store.base import AuditEntry, AuditFilter
from tests.collector.web.conftest import BrowserFactory

TOKEN = re.compile(r"rmmen_[A-Za-z0-9_-]+")


async def test_adding_a_client_shows_its_enrollment_token_once_and_it_enrolls(
    browser: BrowserFactory,
) -> None:
    b = await (await browser()).sign_in("admin", name="ada")
    page = await b.post("/clients", {"csrf": b.csrf, "name": "Acme Dental"}, status=201)
    assert "Shown once." in page.text
    token = TOKEN.search(page.html)
    assert token is not None
    client = await b.harness.store.find_client("Acme Dental")
    assert client is not None
    agent = await b.harness.enroll(token.group(0), "hw-1")
    assert agent["machine_id"]
    detail = await b.get(f"/clients/{client.client_id}")
    assert TOKEN.search(detail.html) is None
    assert "active" in detail.text
    listing = await b.get("/clients")
    assert "Acme Dental" in listing.text
    entries = await b.harness.store.list_audit(AuditFilter(actor="ada"))
    assert [e.action for _, e in entries][:2] == ["enrollment_token.created", "client.created"]


async def test_client_names_are_required_and_unique(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin")
    await b.post("/clients", {"csrf": b.csrf, "name": "Globex"}, status=201)
    again = await b.post("/clients", {"csrf": b.csrf, "name": "Globex"}, status=409)
    assert "already exists" in again.text
    blank = await b.post("/clients", {"csrf": b.csrf, "name": "   "}, status=400)
    assert "Give the client a name" in blank.text


async def test_new_and_revoked_enrollment_tokens(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin", name="ada")
    first = await b.post("/clients", {"csrf": b.csrf, "name": "Initech"}, status=201)
    client = await b.harness.store.find_client("Initech")
    assert client is not None
    base = f"/clients/{client.client_id}/enrollment-tokens"
    b.harness.clock.advance(minutes=5)
    second = await b.post(base, {"csrf": b.csrf}, status=201)
    old_token = TOKEN.search(first.html).group(0)  # type: ignore[union-attr]
    new_token = TOKEN.search(second.html).group(0)  # type: ignore[union-attr]
    assert old_token != new_token
    tokens = await b.harness.store.list_enrollment_tokens(client.client_id)
    revoked = await b.post(f"{base}/revoke", {"csrf": b.csrf, "token_id": tokens[0].token_id})
    assert revoked.headers["Location"] == f"/clients/{client.client_id}?revoked=1"
    detail = await b.get(revoked.headers["Location"])
    assert "Revoked 1 enrollment token." in detail.text
    refused = await b.harness.client.post(
        "/v1/enroll",
        json={
            "enrollment_token": old_token,
            "hardware_id": "hw-9",
            "hostname": "late",
            "os": "x",
            "kind": "pc",
        },
    )
    assert refused.status == 401
    await b.harness.enroll(new_token, "hw-10")
    everything = await b.post(f"{base}/revoke", {"csrf": b.csrf})
    assert everything.headers["Location"].endswith("revoked=1")
    await b.post(base, {"csrf": "forged"}, status=403)
    await b.get("/clients/no-such-client", status=404)
    await b.get("/clients/Initech", status=404)  # by id only, never by name


async def test_the_audit_log_filters_and_pages_newest_first(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin", name="ada")
    store, clock = b.harness.store, b.harness.clock
    for n in range(130):
        clock.advance(minutes=1)
        await store.add_audit(
            AuditEntry(clock.now(), "tina", "offboard.requested", f"m-{n:03d}", {"reason": "r"})
        )
    page = await b.get("/audit?actor=tina")
    targets = re.findall(r'href="/machines/(m-\d+)"', page.html)
    assert len(targets) == 100 and targets[0] == "m-129" and targets[-1] == "m-030"
    older = re.search(r'<a href="([^"]+)" rel="next">Older', page.html)
    assert older is not None
    rest = await b.get(older.group(1).replace("&amp;", "&"))
    assert re.findall(r'href="/machines/(m-\d+)"', rest.html)[-1] == "m-000"
    assert 'rel="next">Older' not in rest.html
    one = await b.get("/audit?target=m-007")
    assert re.findall(r'href="/machines/(m-\d+)"', one.html) == ["m-007"]
    signed_in = await b.get("/audit?action=web.signed_in")
    assert "ada" in signed_in.text and "tina" not in signed_in.text
    assert "No entries match." in (await b.get("/audit?since=2030-01-01")).text
