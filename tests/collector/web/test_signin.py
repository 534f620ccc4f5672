"""Signing in as a person: user name, password and a code accepted once; the first sign-in sets
up the second factor (QR code, recovery codes shown once) and forces a password of one's own;
failures are throttled per user and per address and audited; a stale session is asked for a
fresh code before an offboard; token sign-in is break-glass only."""

from __future__ import annotations

import re
from typing import Any

from collector import accounts, totp
from collector.store.base import AuditFilter
from collector.web.state import WEB
from tests.collector.conftest import Harness, HarnessFactory
from tests.collector.web.conftest import (
    Browser,
    BrowserFactory,
    Credentials,
    add_person,
    fresh_code,
)


async def _audit(harness: Harness, action: str) -> list[Any]:
    return [e for _, e in await harness.store.list_audit(AuditFilter(action=action))]


async def test_a_wrong_password_or_unknown_name_is_refused_alike_and_audited(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    ana = await add_person(b.harness, "viewer", "ana")
    wrong = await b.sign_in_as(ana, password="not the password", status=401)
    assert "user name or password is wrong" in wrong.text
    ghost = Credentials("ghost", "whatever password", ana.totp_secret)
    unknown = await b.sign_in_as(ghost, status=401)
    assert "user name or password is wrong" in unknown.text
    await b.get("/", status=303)
    failed = await _audit(b.harness, "web.sign_in_failed")
    assert sorted((e.actor, e.detail["reason"]) for e in failed) == [
        ("ana", "wrong_password"),
        ("ghost", "unknown_user"),
    ]
    assert all(e.detail["address"] == "127.0.0.1" for e in failed)


async def test_a_wrong_code_is_refused(browser: BrowserFactory) -> None:
    b = await browser()
    ana = await add_person(b.harness, "viewer", "ana")
    code = totp.code_at(ana.totp_secret, b.harness.clock.now())
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    page = await b.sign_in_as(ana, code=wrong, status=401)
    assert "code is wrong or was used already" in page.text
    missing = await b.sign_in_as(ana, code="", status=400)
    assert "6-digit code" in missing.text
    await b.get("/", status=303)


async def test_malformed_sign_in_forms_are_refused_and_change_nothing(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    ana = await add_person(b.harness, "viewer", "ana")
    for fields, message in (
        ({"username": "", "password": ana.password}, "Enter your user name and password"),
        ({"username": "ana", "password": ""}, "Enter your user name and password"),
        ({"username": "ana\x00", "password": ana.password}, "not a user name and password"),
        ({"username": "a" * 300, "password": ana.password}, "not a user name and password"),
    ):
        form = await b.get("/signin")
        page = await b.post(
            "/signin", {**fields, "code": "", "csrf": form.csrf, "next": "/"}, status=400
        )
        assert message in page.text
    await b.get("/", status=303)
    assert not await _audit(b.harness, "web.signed_in")


async def test_a_code_is_accepted_once(browser: BrowserFactory) -> None:
    first, second = await browser(), await browser()
    ana = await add_person(first.harness, "viewer", "ana")
    code = fresh_code(first.harness, ana)
    await first.sign_in_as(ana, code=code)
    replayed = await second.sign_in_as(ana, code=code, status=401)
    assert "used already" in replayed.text
    await second.get("/", status=303)
    await first.get("/")


async def test_failed_sign_ins_are_throttled_per_user_even_with_the_right_password(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    ana = await add_person(b.harness, "viewer", "ana")
    for _ in range(5):
        await b.sign_in_as(ana, password="guess guess guess", status=401)
    throttled = await b.sign_in_as(ana, status=429)
    assert "Too many failed sign-ins" in throttled.text
    (refusal,) = await _audit(b.harness, "web.sign_in_throttled")
    assert refusal.detail["reason"] == "throttled_user" and refusal.actor == "ana"
    # Another person from the same address is not locked out by ana's failures...
    bo = await add_person(b.harness, "viewer", "bo")
    await (await browser()).sign_in_as(bo)
    # ...and after the window ana may try again.
    b.harness.clock.advance(minutes=15, seconds=1)
    await b.sign_in_as(ana)


async def test_the_count_per_name_holds_across_instances_and_restarts(
    browser: BrowserFactory, make_harness: HarnessFactory, aiohttp_client: Any
) -> None:
    """Failures through one instance count on another sharing the database: a fresh instance
    (or a restarted one) has no memory of them, but the audit log has."""
    first = await browser()
    ana = await add_person(first.harness, "viewer", "ana")
    for _ in range(5):
        await first.sign_in_as(ana, password="guess guess guess", status=401)
    other = await make_harness()
    elsewhere = Browser(client=await aiohttp_client(other.client.server), harness=other, people={})
    refused = await elsewhere.sign_in_as(ana, status=429)
    assert "Too many failed sign-ins" in refused.text
    other.clock.advance(minutes=15, seconds=1)
    await elsewhere.sign_in_as(ana)


async def test_failed_sign_ins_are_throttled_per_address_across_user_names(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    ana = await add_person(b.harness, "viewer", "ana")
    for number in range(20):
        guess = Credentials(f"name-{number}", "some password here", ana.totp_secret)
        await b.sign_in_as(guess, status=401)
    refused = await b.sign_in_as(ana, status=429)
    assert "Too many failed sign-ins" in refused.text


async def test_a_recovery_code_signs_in_once(browser: BrowserFactory) -> None:
    b = await browser()
    made = await accounts.create_user(
        b.harness.store,
        "ana",
        "technician",
        box=b.harness.app[WEB].secret_box(),
        now=b.harness.clock.now(),
        actor="test",
    )
    codes = await _first_sign_in(b, "ana", str(made.password), made.totp_secret)
    assert len(codes) == 10 and len(set(codes)) == 10
    person = Credentials("ana", "ana's very own password", made.totp_secret)
    await _choose_password(b, str(made.password), person.password)
    again = await browser()
    await again.sign_in_as(person, code=codes[0])
    entry = (await _audit(b.harness, "web.signed_in"))[0]
    assert entry.detail["method"] == "password+recovery"
    assert entry.detail["recovery_codes_left"] == 9
    spent = await (await browser()).sign_in_as(person, code=codes[0], status=401)
    assert "used already" in spent.text


async def _first_sign_in(b: Browser, name: str, password: str, secret: str) -> list[str]:
    """Password alone -> the QR page; its first code -> a session and the recovery codes."""
    form = await b.get("/signin")
    setup = await b.post(
        "/signin",
        {"username": name, "password": password, "code": "", "csrf": form.csrf, "next": "/"},
        status=200,
    )
    assert "Set up your second factor" in setup.text
    assert any(tag == "svg" for tag, _ in setup.tags), "the QR code is drawn"
    assert secret in setup.text and "otpauth://totp/" in setup.html
    ticket = re.search(r'name="ticket" value="([^"]+)"', setup.html)
    assert ticket
    code = totp.code_at(secret, b.harness.clock.now())
    shown = await b.post(
        "/signin/setup",
        {"csrf": setup.csrf, "ticket": ticket.group(1), "code": code, "next": "/"},
        status=200,
    )
    assert "shown this once" in shown.text
    return re.findall(r"<code>([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{2})</code>", shown.html)


async def _choose_password(b: Browser, current: str, new: str) -> None:
    page = await b.get("/account/password")
    await b.post(
        "/account/password", {"csrf": page.csrf, "current": current, "new": new, "repeat": new}
    )


async def test_the_first_sign_in_sets_up_the_second_factor_and_forces_a_new_password(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    made = await accounts.create_user(
        b.harness.store,
        "ana",
        "viewer",
        box=b.harness.app[WEB].secret_box(),
        now=b.harness.clock.now(),
        actor="test",
    )
    await _first_sign_in(b, "ana", str(made.password), made.totp_secret)
    # Every page leads to choosing a password until one is chosen.
    assert (await b.get("/machines", status=303)).headers["Location"] == "/account/password"
    page = await b.get("/account/password")
    short = await b.post(
        "/account/password",
        {"csrf": page.csrf, "current": str(made.password), "new": "short", "repeat": "short"},
        status=400,
    )
    assert "at least 12 characters" in short.text
    same = str(made.password)
    reused = await b.post(
        "/account/password",
        {"csrf": page.csrf, "current": same, "new": same, "repeat": same},
        status=400,
    )
    assert "other than the one you were given" in reused.text
    await _choose_password(b, str(made.password), "a password ana chose herself")
    assert "ana" in (await b.get("/machines")).text
    user = await b.harness.store.find_user("ana")
    assert user is not None and not user.must_change_password and user.mfa_enrolled
    actions = {e.action for _, e in await b.harness.store.list_audit(AuditFilter(actor="ana"))}
    assert {"user.mfa_enrolled", "web.signed_in", "user.password_changed"} <= actions


async def test_a_wrong_first_code_sets_nothing_up(browser: BrowserFactory) -> None:
    b = await browser()
    made = await accounts.create_user(
        b.harness.store,
        "ana",
        "viewer",
        box=b.harness.app[WEB].secret_box(),
        now=b.harness.clock.now(),
        actor="test",
    )
    form = await b.get("/signin")
    setup = await b.post(
        "/signin",
        {"username": "ana", "password": str(made.password), "csrf": form.csrf, "next": "/"},
        status=200,
    )
    ticket = re.search(r'name="ticket" value="([^"]+)"', setup.html)
    assert ticket
    wrong = await b.post(
        "/signin/setup",
        {"csrf": setup.csrf, "ticket": ticket.group(1), "code": "000000", "next": "/"},
        status=401,
    )
    assert "not right" in wrong.text
    forged = await b.post(
        "/signin/setup",
        {"csrf": wrong.csrf, "ticket": "forged", "code": "1", "next": "/"},
        status=401,
    )
    assert "Sign in again" in forged.text
    user = await b.harness.store.find_user("ana")
    assert user is not None and not user.mfa_enrolled
    await b.get("/", status=303)


async def test_a_disabled_person_cannot_sign_in(browser: BrowserFactory) -> None:
    b = await browser()
    ana = await add_person(b.harness, "viewer", "ana")
    await b.harness.store.disable_user("ana", now=b.harness.clock.now(), actor="test")
    await b.sign_in_as(ana, status=401)
    (entry,) = await _audit(b.harness, "web.sign_in_failed")
    assert entry.detail["reason"] == "disabled"


async def test_resetting_the_second_factor_ends_the_session_and_is_audited(
    browser: BrowserFactory,
) -> None:
    b = await (await browser()).sign_in("viewer", name="ana")
    await accounts.reset_mfa(
        b.harness.store,
        "ana",
        box=b.harness.app[WEB].secret_box(),
        now=b.harness.clock.now(),
        actor="ada",
    )
    await b.get("/", status=303)
    (entry,) = await _audit(b.harness, "user.mfa_reset")
    assert (entry.actor, entry.target) == ("ada", "ana")


async def test_an_offboard_asks_for_a_fresh_code_after_ten_minutes(
    browser: BrowserFactory,
) -> None:
    b = await (await browser()).sign_in("technician", name="tina")
    _, enrollment = await b.harness.add_client()
    machine_id = (await b.harness.enroll(enrollment))["machine_id"]
    b.harness.clock.advance(minutes=10, seconds=1)
    form = await b.get(f"/machines/{machine_id}/offboard")
    fields = {
        "csrf": form.csrf,
        "reason": "left the client",
        "ticket": "T-1",
        "confirm": machine_id,
    }
    asked = await b.post(f"/machines/{machine_id}/offboard", fields, status=200)
    assert "Confirm it is you" in asked.text
    assert 'value="left the client"' in asked.html  # the request is carried along
    assert not await b.harness.store.list_audit(AuditFilter(action="offboard.requested"))
    wrong = await b.post(
        f"/machines/{machine_id}/offboard", {**fields, "reauth_code": "000000"}, status=401
    )
    assert "wrong or was used already" in wrong.text
    done = await b.post(
        f"/machines/{machine_id}/offboard", {**fields, "reauth_code": b.code()}, status=303
    )
    assert done.headers["Location"].startswith("/commands/")
    actions = [e.action for _, e in await b.harness.store.list_audit(AuditFilter(actor="tina"))]
    assert "web.reauthenticated" in actions and "web.reauth_failed" in actions
    # Within ten minutes of that code, no new one is asked for.
    b.harness.clock.advance(minutes=9)
    await b.get(f"/machines/{machine_id}/offboard")


async def test_guessing_the_fresh_code_is_throttled(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin", name="ada")
    page = await b.get("/clients")
    b.harness.clock.advance(minutes=11)
    fields = {"csrf": page.csrf, "name": "Acme"}
    for guess in range(5):
        await b.post("/clients", {**fields, "reauth_code": f"{guess:06d}"}, status=401)
    throttled = await b.post("/clients", {**fields, "reauth_code": b.code()}, status=401)
    assert "Too many wrong codes" in throttled.text
    assert await b.harness.store.find_client("Acme") is None


async def test_token_sign_in_is_off_by_default(browser: BrowserFactory) -> None:
    b = await browser()
    token = (await b.harness.api_token("admin"))["Authorization"].split()[1]
    assert "API token" not in (await b.get("/signin")).text
    refused = await b.sign_in_with(token, status=403)
    assert "switched off" in refused.text
    await b.get("/", status=303)


async def test_break_glass_token_sign_in_works_when_switched_on_and_is_audited(
    make_harness: HarnessFactory, aiohttp_client: Any
) -> None:
    harness = await make_harness(web_token_signin=True)
    (started,) = await _audit(harness, "web.token_signin_enabled")
    assert started.actor == "system"
    b = Browser(client=await aiohttp_client(harness.client.server), harness=harness, people={})
    token = (await harness.api_token("admin", name="glass"))["Authorization"].split()[1]
    assert "Break-glass" in (await b.get("/signin")).text
    await b.sign_in_with(token)
    assert "glass" in (await b.get("/")).text
    (entry,) = await _audit(harness, "web.signed_in")
    assert entry.actor == "glass" and entry.detail["break_glass"] is True
    other = Browser(client=await aiohttp_client(harness.client.server), harness=harness, people={})
    wrong = await other.sign_in_with("rmmapi_nope", status=401)
    assert "unknown or revoked" in wrong.text
    _, enrollment = await harness.add_client()
    agent = await harness.enroll(enrollment)
    refused = await other.sign_in_with(agent["agent_token"], status=403)
    assert "agent token" in refused.text
    await harness.store.revoke_api_token("glass", now=harness.clock.now(), actor="test")
    await b.get("/", status=303)
