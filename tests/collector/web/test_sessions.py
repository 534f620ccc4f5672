"""Signing in as a person gives a session cookie; it ends at sign-out, at expiry, and the moment
the person is disabled; it is sealed, so it cannot be forged or read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.app import create_app
from collector.settings import Settings
from collector.store.base import AuditFilter
from tests.collector.conftest import HarnessFactory
from tests.collector.web.conftest import Browser, BrowserFactory, add_person, fresh_code


async def test_pages_send_a_stranger_to_sign_in_and_back_where_they_were(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    answer = await b.get("/machines?state=online", status=303)
    assert answer.headers["Location"] == "/signin?next=%2Fmachines%3Fstate%3Donline"
    vic = await add_person(b.harness, "viewer", "vic")
    signed_in = await b.sign_in_as(vic, next_url="/machines?state=online")
    assert signed_in.headers["Location"] == "/machines?state=online"
    page = await b.get("/machines?state=online")
    assert "vic" in page.text and "viewer" in page.text


async def test_the_session_cookie_is_httponly_strict_expiring_and_reveals_nothing(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    tina = await add_person(b.harness, "technician", "tina")
    answer = await b.sign_in_as(tina)
    cookie = answer.headers["Set-Cookie"]
    assert "rmm_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=43200" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would never return
    value = b.session_cookie()
    assert "tina" not in value and tina.password not in value


async def _sign_in_claiming_https(b: Browser) -> Any:
    """A sign-in whose request says, in `X-Forwarded-Proto`, that the browser used HTTPS."""
    vic = await add_person(b.harness, "viewer", "vic")
    form = await b.get("/signin")
    resp = await b.client.post(
        "/signin",
        data={
            "username": "vic",
            "password": vic.password,
            "code": fresh_code(b.harness, vic),
            "csrf": form.csrf,
            "next": "/",
        },
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert resp.status == 303
    return resp


async def test_behind_a_trusted_proxy_that_speaks_tls_the_cookie_is_secure(
    make_harness: HarnessFactory, aiohttp_client: Any
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1")
    client = await aiohttp_client(harness.client.server)
    resp = await _sign_in_claiming_https(Browser(client=client, harness=harness, people={}))
    assert "Secure" in resp.headers["Set-Cookie"]
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


# No proxy trusted at all; a proxy trusted elsewhere, not this peer (the test connects from
# 127.0.0.1).
@pytest.mark.parametrize("trusted_proxies", ["", "192.0.2.0/24"])
async def test_forwarded_proto_from_a_peer_that_is_no_trusted_proxy_means_nothing(
    make_harness: HarnessFactory, aiohttp_client: Any, trusted_proxies: str
) -> None:
    """Anyone can write the header; only a proxy the collector trusts may say TLS was used."""
    harness = await make_harness(trusted_proxies=trusted_proxies)
    client = await aiohttp_client(harness.client.server)
    b = Browser(client=client, harness=harness, people={})
    resp = await _sign_in_claiming_https(b)
    assert "Secure" not in resp.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in resp.headers
    page = await b.client.get("/signin", headers={"X-Forwarded-Proto": "https"})
    assert page.status == 200
    assert "Strict-Transport-Security" not in page.headers


async def test_the_sign_in_form_needs_its_own_csrf_token(browser: BrowserFactory) -> None:
    b = await browser()
    ada = await add_person(b.harness, "admin", "ada")
    forged = await b.post(
        "/signin",
        {"username": "ada", "password": ada.password, "code": "123456", "csrf": "x", "next": "/"},
        status=403,
    )
    assert "expired or came from elsewhere" in forged.text
    await b.get("/", status=303)


async def test_sign_in_never_redirects_to_another_site(browser: BrowserFactory) -> None:
    first = await browser()
    vic = await add_person(first.harness, "viewer", "vic")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        b = await browser()
        answer = await b.sign_in_as(vic, next_url=target)
        assert answer.headers["Location"] == "/"


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(
    browser: BrowserFactory,
) -> None:
    b = await (await browser()).sign_in("technician", name="tina")
    copied = b.session_cookie()
    page = await b.get("/")
    assert "/signout" in page.forms
    answer = await b.post("/signout", {"csrf": page.csrf})
    assert answer.headers["Location"] == "/signin?signed_out=1"
    await b.get("/", status=303)
    assert "You are signed out." in (await b.get("/signin?signed_out=1")).text
    thief = await browser()
    thief.client.session.cookie_jar.update_cookies({"rmm_session": copied})
    await thief.get("/", status=303)
    actions = [e.action for _, e in await b.harness.store.list_audit(AuditFilter(actor="tina"))]
    assert actions[:2] == ["web.signed_out", "web.signed_in"]


async def test_disabling_the_person_ends_their_sessions_on_the_next_request(
    browser: BrowserFactory,
) -> None:
    b = await (await browser()).sign_in("technician", name="tina")
    await b.get("/machines")
    await b.harness.store.disable_user("tina", now=b.harness.clock.now(), actor="test")
    answer = await b.get("/machines", status=303)
    assert answer.headers["Location"].startswith("/signin")
    live = await b.client.get("/commands/anything/live")
    assert live.status == 401 and (await live.json())["error"] == "signed_out"


async def test_a_session_lasts_twelve_hours(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("viewer")
    b.harness.clock.advance(hours=11, minutes=59)
    await b.get("/")
    b.harness.clock.advance(minutes=2)
    await b.get("/", status=303)


async def test_a_tampered_or_foreign_cookie_is_no_session(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin")
    value = b.session_cookie()
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    for forged in (flipped, "garbage", value[:20]):
        other = await browser()
        other.client.session.cookie_jar.update_cookies({"rmm_session": forged})
        await other.get("/", status=303)


async def test_another_instance_sharing_the_keys_folder_accepts_the_session(
    browser: BrowserFactory, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Several collectors behind a load balancer: the cookie works on each of them."""
    b: Browser = await (await browser()).sign_in("viewer", name="vic")
    harness = b.harness
    second = create_app(
        replace(Settings(db="unused"), keys_dir=str(tmp_path / "keys")),
        store=harness.store,
        clock=harness.clock,
    )
    client = await aiohttp_client(second)
    client.session.cookie_jar.update_cookies({"rmm_session": b.session_cookie()})
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 200
    assert "vic" in await resp.text()
    elsewhere = create_app(
        replace(Settings(db="unused"), keys_dir=str(tmp_path / "other-keys")),
        store=harness.store,
        clock=harness.clock,
    )
    stranger = await aiohttp_client(elsewhere)
    stranger.session.cookie_jar.update_cookies({"rmm_session": b.session_cookie()})
    assert (await stranger.get("/", allow_redirects=False)).status == 303


async def test_the_session_secret_file_is_private(browser: BrowserFactory, tmp_path: Path) -> None:
    await (await browser()).sign_in("viewer")
    secret = tmp_path / "keys" / "web-session.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(secret.read_text().strip())) == 32


async def test_behind_a_trusted_proxy_the_sign_in_is_audited_with_the_clients_address(
    make_harness: HarnessFactory, aiohttp_client: Any
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1")
    client = await aiohttp_client(
        harness.client.server, headers={"X-Forwarded-For": "192.0.2.1, 203.0.113.7"}
    )
    await Browser(client=client, harness=harness, people={}).sign_in("viewer", name="vic")
    ((_, entry),) = await harness.store.list_audit(AuditFilter(actor="vic", action="web.signed_in"))
    assert entry.detail["address"] == "203.0.113.7"
