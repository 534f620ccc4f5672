"""Roles exactly as the API's, CSRF on every form, and the security headers of every page."""

from __future__ import annotations

import re

import pytest

from collector.store.base import AuditFilter, CommandFilter
from tests.collector.web import scenario
from tests.collector.web.conftest import Browser, BrowserFactory

PAGES = ["/", "/machines", "/signin"]


async def machine_of(b: Browser) -> str:
    _, enrollment = await b.harness.add_client("Acme Dental")
    return str((await b.harness.enroll(enrollment, "hw-1", hostname="front-desk"))["machine_id"])


@pytest.mark.parametrize("role", ["viewer", "billing"])
async def test_readers_see_no_way_to_offboard_and_a_forged_post_is_403(
    browser: BrowserFactory, role: str
) -> None:
    b = await browser()
    machine_id = await machine_of(b)
    await b.sign_in(role)  # type: ignore[arg-type]
    page = await b.get(f"/machines/{machine_id}")
    assert "front-desk" in page.text
    assert "Offboard" not in page.text
    assert not any("/offboard" in link for link in page.links)
    assert not any("/offboard" in action for action in page.forms)
    await b.get(f"/machines/{machine_id}/offboard", status=403)
    forged = await b.post(
        f"/machines/{machine_id}/offboard",
        {"csrf": b.csrf, "reason": "forged", "confirm": machine_id},
        status=403,
    )
    assert f"the {role} role may not do this" in forged.text
    assert await b.harness.store.list_commands(CommandFilter(machine_id=machine_id)) == []
    assert await b.harness.store.list_audit(AuditFilter(action="offboard.requested")) == []


@pytest.mark.parametrize("role", ["technician", "admin"])
async def test_technicians_and_admins_get_the_offboard_button(
    browser: BrowserFactory, role: str
) -> None:
    b = await browser()
    machine_id = await machine_of(b)
    await b.sign_in(role)  # type: ignore[arg-type]
    page = await b.get(f"/machines/{machine_id}")
    assert f"/machines/{machine_id}/offboard" in page.links


async def test_a_post_without_this_sessions_csrf_token_is_refused(
    browser: BrowserFactory,
) -> None:
    tech = await (await browser()).sign_in("technician", name="tina")
    machine_id = await machine_of(tech)
    other = await (await browser()).sign_in("technician", name="tom")
    body = {"reason": "no token", "confirm": machine_id}
    await tech.post(f"/machines/{machine_id}/offboard", body, status=403)
    await tech.post(f"/machines/{machine_id}/offboard", {**body, "csrf": other.csrf}, status=403)
    await tech.post(f"/machines/{machine_id}/offboard", {**body, "csrf": ""}, status=403)
    assert await tech.harness.store.list_commands(CommandFilter(machine_id=machine_id)) == []
    stranger = await browser()
    signed_out = await stranger.post(f"/machines/{machine_id}/offboard", body, status=401)
    assert "Sign in again" in signed_out.text


@pytest.mark.parametrize("role", ["viewer", "technician", "billing"])
async def test_clients_and_the_audit_log_are_for_admins(browser: BrowserFactory, role: str) -> None:
    b = await (await browser()).sign_in(role)  # type: ignore[arg-type]
    page = await b.get("/")
    assert "/clients" not in page.links and "/audit" not in page.links
    await b.get("/clients", status=403)
    await b.get("/audit", status=403)
    await b.post("/clients", {"csrf": b.csrf, "name": "Sneaky"}, status=403)
    assert await b.harness.store.find_client("Sneaky") is None


async def test_admins_see_every_section(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin")
    page = await b.get("/")
    assert {"/", "/machines", "/clients", "/audit"} <= set(page.links)


async def test_every_page_sends_the_security_headers(browser: BrowserFactory) -> None:
    b = await browser()
    s = await scenario.build(b.harness)
    await b.sign_in("admin")
    machine_id = s.machines["ok"]["machine_id"]
    paths = [
        "/",
        "/machines",
        f"/machines/{machine_id}",
        f"/machines/{machine_id}/offboard",
        f"/commands/{s.pending_command}",
        "/clients",
        f"/clients/{s.client_id}",
        "/audit",
        "/static/style.css",
        "/static/live.js",
    ]
    for path in paths:
        resp = await b.client.get(path, allow_redirects=False)
        assert resp.status == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        expected = "no-cache" if path.startswith("/static/") else "no-store"
        assert resp.headers["Cache-Control"] == expected, path
    for path in ("/signin", "/nowhere"):
        resp = await b.client.get(path, allow_redirects=False)
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], path


async def test_no_page_carries_inline_script_or_style(browser: BrowserFactory) -> None:
    b = await browser()
    s = await scenario.build(b.harness)
    await b.sign_in("admin")
    machine_id = s.machines["broken"]["machine_id"]
    for path in (
        "/",
        "/machines",
        f"/machines/{machine_id}",
        f"/machines/{machine_id}/offboard",
        f"/commands/{s.failed_command}",
        "/audit",
        "/clients",
    ):
        page = await b.get(path)
        for tag, attrs in page.tags:
            assert "style" not in attrs, (path, tag)
            assert not any(name.startswith("on") for name in attrs), (path, tag)
            if tag == "script":
                assert attrs.get("src", "").startswith("/static/"), path  # type: ignore[union-attr]
        assert "<style" not in page.html and "javascript:" not in page.html


async def test_unknown_pages_are_html_and_the_api_keeps_its_json_errors(
    browser: BrowserFactory,
) -> None:
    b = await (await browser()).sign_in("viewer")
    missing = await b.get("/no/such/page", status=404)
    assert missing.headers["Content-Type"].startswith("text/html")
    assert "There is no page here." in missing.text
    assert (await b.get("/machines/not-a-machine", status=404)).text.count("No machine") == 1
    api = await b.client.get("/v1/nothing-here")
    assert api.status == 404 and (await api.json())["error"] == "not_found"
    assert "Content-Security-Policy" not in api.headers
    assert (await b.client.get("/v1/machines")).status == 401  # a cookie is no API token
    wrong_method = await b.client.delete("/machines")
    assert wrong_method.status == 405 and "GET" in wrong_method.headers["Allow"]
    assert "is not allowed on /machines" in await wrong_method.text()
    assert "frame-ancestors 'none'" in wrong_method.headers["Content-Security-Policy"]


async def test_static_files_are_only_the_shipped_ones(browser: BrowserFactory) -> None:
    b = await browser()
    for path in ("/static/nothing.css", "/static/..%2Frender.py", "/static/%2e%2e/render.py"):
        resp = await b.client.get(path)
        assert resp.status == 404, path
        assert resp.headers["Content-Type"].startswith("text/html"), path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
    css = await b.client.get("/static/style.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")


async def test_bad_filters_are_a_clear_400(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin")
    for query in ("state=gone", "kind=phone", "status=odd", "page=0", "offline_days=x"):
        page = await b.get(f"/machines?{query}", status=400)
        assert re.search(r"must be", page.text), query
    assert "since must be" in (await b.get("/audit?since=yesterday", status=400)).text
    assert "before must be" in (await b.get("/audit?before=x", status=400)).text


async def test_a_nul_character_in_a_page_path_is_a_page_never_a_500(
    browser: BrowserFactory,
) -> None:
    # SQLite finds no such row (404); PostgreSQL refuses the text itself (400). Either way the
    # person gets the site's own error page, with its security headers.
    b = await (await browser()).sign_in("admin")
    for path in ("/machines/abc%00def", "/machines/abc%00def/offboard", "/commands/x%00y"):
        resp = await b.client.get(path, allow_redirects=False)
        assert resp.status in (400, 404), path
        assert resp.headers["Content-Type"].startswith("text/html"), path
        assert "Content-Security-Policy" in resp.headers, path
