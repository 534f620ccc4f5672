"""Single sign-on against a small local stand-in identity provider: a real aiohttp server on
loopback that speaks the documented OpenID Connect protocol (discovery document, JWKS, an
authorization endpoint that answers at once with a code, a token endpoint that checks the client
secret and the PKCE verifier and returns an RS256-signed ID token). It stands in for Entra ID or
Google Workspace, the one edge a test cannot reach; the collector's side is all real.

Each test can make the provider misbehave the way an attacker or a misconfiguration would: sign
with a key not in its JWKS, name another audience, echo another nonce.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from collector.oidc import parse_roles, role_for
from collector.settings import Settings, SettingsError, validate
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness, HarnessFactory
from tests.collector.web.conftest import Browser

CLIENT_ID = "rmm-collector"
CLIENT_SECRET = "stand-in client secret"
REDIRECT = "http://collector.test/signin/oidc/callback"


@dataclass
class StandInProvider:
    """What the provider does; a test changes these to misbehave."""

    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "a"}))
    signing_key: RSAKey | None = None  # None: sign with `key` (the one in the JWKS)
    audience: str = CLIENT_ID
    nonce_override: str | None = None
    groups: list[str] = field(default_factory=lambda: ["noc-techs"])
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
        assert q["redirect_uri"] == REDIRECT and q["code_challenge_method"] == "S256"
        assert "openid" in q["scope"].split()
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"]}
        target = f"{REDIRECT}?{urlencode({'code': code, 'state': q['state']})}"
        return web.Response(status=302, headers={"Location": target})

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        pair = base64.b64decode(encoded).decode() if scheme == "Basic" else ":"
        client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
        if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if grant is None or challenge != grant["challenge"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": "00u-ana",
            "aud": self.audience,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            "nonce": self.nonce_override or grant["nonce"],
            "preferred_username": "ana@msp.example",
            "groups": self.groups,
        }
        signer = self.signing_key or self.key
        id_token = jwt.encode({"alg": "RS256", "kid": signer.kid}, claims, signer)
        return web.json_response(
            {"access_token": "x", "token_type": "Bearer", "id_token": id_token}
        )


@pytest.fixture
async def provider() -> Any:
    stand_in = StandInProvider()
    server = TestServer(stand_in.app())
    await server.start_server()
    stand_in.url = str(server.make_url("")).rstrip("/")
    yield stand_in
    await server.close()


@pytest.fixture
async def sso(
    make_harness: HarnessFactory, provider: StandInProvider, tmp_path: Path, aiohttp_client: Any
) -> tuple[Harness, Browser]:
    secret = tmp_path / "oidc-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    secret.chmod(0o600)
    harness = await make_harness(
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret_file=str(secret),
        oidc_redirect_url=REDIRECT,
        oidc_roles="noc-techs=technician,noc-admins=admin",
    )
    # The provider issues its tokens at the real now; the collector's clock is set to it.
    harness.clock.set(datetime.now(UTC))
    client = await aiohttp_client(harness.client.server)
    return harness, Browser(client=client, harness=harness, people={})


async def _through_provider(b: Browser, next_url: str = "/") -> str:
    """Start at the collector, follow the provider's answer; the callback path and query."""
    start = await b.get(f"/signin/oidc?next={next_url}", status=303)
    authorize = start.headers["Location"]
    async with (
        aiohttp.ClientSession() as browser_elsewhere,
        browser_elsewhere.get(authorize, allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        back = urlsplit(resp.headers["Location"])
    return f"{back.path}?{back.query}"


async def test_a_person_in_a_mapped_group_signs_in_with_the_role_it_maps_to(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    assert "organisation's account" in (await b.get("/signin")).text
    start = await b.get("/signin/oidc?next=/machines", status=303)
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    callback = await _through_provider(b, "/machines")
    done = await b.get(callback, status=303)
    assert done.headers["Location"] == "/machines"
    page = await b.get("/machines")
    assert "ana@msp.example" in page.text and "technician" in page.text
    (entry,) = [e for _, e in await harness.store.list_audit(AuditFilter(action="web.signed_in"))]
    assert entry.actor == "ana@msp.example"
    assert entry.detail["method"] == "oidc" and entry.detail["role"] == "technician"
    assert entry.detail["subject"] == f"{provider.url}|00u-ana"


async def test_an_id_token_signed_with_another_key_is_refused(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    provider.signing_key = RSAKey.generate_key(2048, parameters={"kid": "a"})
    refused = await b.get(await _through_provider(b), status=401)
    assert "Single sign-on refused" in refused.text
    await b.get("/", status=303)
    await _refusal_is_audited(harness, "bad_signature")


async def test_an_id_token_for_another_audience_is_refused(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    provider.audience = "some-other-app"
    await b.get(await _through_provider(b), status=401)
    await b.get("/", status=303)
    await _refusal_is_audited(harness, "bad_claims")


async def test_an_id_token_with_another_nonce_is_refused(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    provider.nonce_override = "a nonce from another sign-in"
    await b.get(await _through_provider(b), status=401)
    await b.get("/", status=303)
    await _refusal_is_audited(harness, "wrong_nonce")


async def test_a_callback_with_the_wrong_state_is_refused_before_the_code_is_used(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    callback = await _through_provider(b)
    forged = callback.replace("state=", "state=x")
    await b.get(forged, status=401)
    assert provider.token_requests == 0
    await _refusal_is_audited(harness, "wrong_state")


async def test_a_callback_without_a_sign_in_started_here_is_refused(
    sso: tuple[Harness, Browser], provider: StandInProvider, aiohttp_client: Any
) -> None:
    harness, b = sso
    callback = await _through_provider(b)
    stranger = Browser(
        client=await aiohttp_client(harness.client.server), harness=harness, people={}
    )
    await stranger.get(callback, status=401)
    await _refusal_is_audited(harness, "no_pending_sign_in")


async def test_a_person_in_no_mapped_group_is_refused(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    provider.groups = ["sales"]
    refused = await b.get(await _through_provider(b), status=401)
    assert "no group mapped to a role" in refused.text
    await _refusal_is_audited(harness, "no_role")


async def test_an_offboard_after_ten_minutes_sends_the_person_to_sign_in_again(
    sso: tuple[Harness, Browser], provider: StandInProvider
) -> None:
    harness, b = sso
    await b.get(await _through_provider(b), status=303)
    _, enrollment = await harness.add_client()
    machine_id = (await harness.enroll(enrollment))["machine_id"]
    form = await b.get(f"/machines/{machine_id}/offboard")
    harness.clock.advance(minutes=11)
    asked = await b.post(
        f"/machines/{machine_id}/offboard",
        {"csrf": form.csrf, "reason": "gone", "confirm": machine_id},
        status=401,
    )
    assert "Sign in again" in asked.text
    again = f"/signin/oidc?next=%2Fmachines%2F{machine_id}%2Foffboard&amp;again=1"
    assert again in asked.html
    assert not await harness.store.list_audit(AuditFilter(action="offboard.requested"))
    start = await b.get(again.replace("&amp;", "&"), status=303)
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]


async def _refusal_is_audited(harness: Harness, reason: str) -> None:
    failed = await harness.store.list_audit(AuditFilter(action="web.sign_in_failed"))
    assert [e.detail["reason"] for _, e in failed] == [reason]


def test_groups_map_to_the_most_privileged_role_and_bad_maps_are_refused() -> None:
    roles = parse_roles("noc-techs=technician, noc-admins=admin, finance=billing")
    assert role_for(["finance", "noc-admins"], roles) == "admin"
    assert role_for(["finance"], roles) == "billing"
    assert role_for(["sales"], roles) is None
    for bad in ("techs", "techs=root", "=admin"):
        with pytest.raises(ValueError):
            parse_roles(bad)


async def test_without_single_sign_on_set_up_its_pages_are_not_there(
    make_harness: HarnessFactory, aiohttp_client: Any
) -> None:
    harness = await make_harness()
    b = Browser(client=await aiohttp_client(harness.client.server), harness=harness, people={})
    assert "organisation's account" not in (await b.get("/signin")).text
    await b.get("/signin/oidc", status=404)


def test_single_sign_on_settings_must_be_complete() -> None:
    with pytest.raises(SettingsError, match="oidc_client_id, oidc_client_secret_file"):
        validate(replace(Settings(), oidc_issuer="https://idp.example"))
    complete = replace(
        Settings(),
        oidc_issuer="https://idp.example",
        oidc_client_id="c",
        oidc_client_secret_file="/dev/null",
        oidc_redirect_url="https://noc.example/signin/oidc/callback",
    )
    with pytest.raises(SettingsError, match="oidc_roles"):
        validate(replace(complete, oidc_roles="techs=root"))
    validate(replace(complete, oidc_roles="techs=technician"))
