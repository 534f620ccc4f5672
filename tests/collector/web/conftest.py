"""The web pages through a real app on loopback: people signed in with their own cookie jars.

People sign in as people: `Browser.sign_in` adds a user (second factor set up, own password
chosen) and signs in with user name, password and the TOTP code of the injected clock's now.

Like every test that uses the shared `store` fixture, each runs on a real SQLite file and on the
real PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from collector import accounts, passwords, totp
from collector.keys import KeyRing
from collector.store.base import Role
from collector.web.state import WEB
from tests.collector.conftest import Harness, HarnessFactory
from tests.support.clock import FakeClock

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.forms: list[str] = []
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "a" and dict(attrs).get("href"):
            self.links.append(dict(attrs)["href"] or "")
        if tag == "form":
            self.forms.append(dict(attrs).get("action") or "")
        if tag in ("script", "style", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "title") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


@dataclass
class Page:
    status: int
    html: str
    headers: Any

    def _parsed(self) -> _Page:
        parser = _Page()
        parser.feed(self.html)
        return parser

    @property
    def text(self) -> str:
        return " ".join(self._parsed().text)

    @property
    def links(self) -> list[str]:
        return self._parsed().links

    @property
    def forms(self) -> list[str]:
        return self._parsed().forms

    @property
    def tags(self) -> list[tuple[str, dict[str, str | None]]]:
        return self._parsed().tags

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.html)
        assert found, "the page has no form with a CSRF token"
        return found.group(1)


@dataclass
class Credentials:
    name: str
    password: str
    totp_secret: str
    last_step: int = -1


async def add_person(
    harness: Harness, role: Role, name: str, *, clients: tuple[str, ...] = ()
) -> Credentials:
    """A person past their first sign-in: the second factor confirmed (at a step long gone, so
    the code of now is still unused) and a password of their own."""
    made = await accounts.create_user(
        harness.store,
        name,
        role,
        clients=clients,
        box=harness.app[WEB].secret_box(),
        now=harness.clock.now(),
        actor="test",
    )
    user_id = made.user.user_id
    password = f"{name} chose this long password"
    await harness.store.confirm_mfa(
        user_id, totp.step_at(harness.clock.now()) - 100, [], now=harness.clock.now()
    )
    await harness.store.set_password(
        user_id, passwords.hash_password(password), now=harness.clock.now(), actor="test"
    )
    return Credentials(name, password, made.totp_secret)


def fresh_code(harness: Harness, person: Credentials) -> str:
    """The person's code of now; the clock moves on a step if this one was used already."""
    if totp.step_at(harness.clock.now()) <= person.last_step:
        harness.clock.advance(seconds=totp.STEP_S)
    person.last_step = totp.step_at(harness.clock.now())
    return totp.code_at(person.totp_secret, harness.clock.now())


@dataclass
class Browser:
    """One person's browser: its own cookie jar, signed in as a person."""

    client: TestClient[web.Request, web.Application]
    harness: Harness
    people: dict[str, Credentials]
    name: str = ""
    csrf: str = ""
    person: Credentials | None = None

    async def get(self, path: str, status: int = 200) -> Page:
        resp = await self.client.get(path, allow_redirects=False)
        page = Page(resp.status, await resp.text(), resp.headers)
        assert resp.status == status, f"{path}: {resp.status}\n{page.text[:2000]}"
        return page

    async def post(self, path: str, data: dict[str, str], status: int = 303) -> Page:
        resp = await self.client.post(path, data=data, allow_redirects=False)
        page = Page(resp.status, await resp.text(), resp.headers)
        assert resp.status == status, f"{path}: {resp.status}\n{page.text[:2000]}"
        return page

    async def sign_in_with(self, token: str, next_url: str = "/", status: int = 303) -> Page:
        """Break-glass: an API token (the site must have `web_token_signin` on)."""
        form = await self.get("/signin")
        return await self.post(
            "/signin", {"token": token, "csrf": form.csrf, "next": next_url}, status=status
        )

    async def sign_in_as(
        self,
        person: Credentials,
        *,
        next_url: str = "/",
        password: str | None = None,
        code: str | None = None,
        status: int = 303,
    ) -> Page:
        form = await self.get("/signin")
        return await self.post(
            "/signin",
            {
                "username": person.name,
                "password": person.password if password is None else password,
                "code": fresh_code(self.harness, person) if code is None else code,
                "csrf": form.csrf,
                "next": next_url,
            },
            status=status,
        )

    async def sign_in(
        self, role: Role, name: str | None = None, *, clients: tuple[str, ...] = ()
    ) -> Browser:
        self.name = name or f"{role}-user"
        person = self.people.get(self.name)
        if person is None:
            person = await add_person(self.harness, role, self.name, clients=clients)
            self.people[self.name] = person
        self.person = person
        answer = await self.sign_in_as(person)
        assert answer.headers["Location"] == "/"
        self.csrf = (await self.get("/machines" if clients else "/")).csrf
        return self

    def code(self) -> str:
        """A fresh code for the signed-in person (re-authentication)."""
        assert self.person is not None
        return fresh_code(self.harness, self.person)

    def session_cookie(self) -> str:
        for cookie in self.client.session.cookie_jar:
            if cookie.key == "rmm_session":
                return cookie.value
        raise AssertionError("no session cookie")


BrowserFactory = Callable[[], Awaitable[Browser]]


@pytest.fixture
async def site(make_harness: HarnessFactory, clock: FakeClock, tmp_path: Path) -> Harness:
    """The collector with a command-signing key, so offboards are delivered to agents."""
    KeyRing(tmp_path / "keys").generate(clock.now())
    return await make_harness(keys_dir=str(tmp_path / "keys"))


@pytest.fixture
async def browser(site: Harness, aiohttp_client: Any) -> BrowserFactory:
    """A fresh browser (its own cookies) on the same running collector, as many as a test needs."""

    people: dict[str, Credentials] = {}

    async def open_browser() -> Browser:
        client = await aiohttp_client(site.client.server)
        return Browser(client=client, harness=site, people=people)

    return open_browser
