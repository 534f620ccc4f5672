"""OpenID Connect sign-in (authorization code flow with PKCE), for Entra ID, Google Workspace
and other identity providers.

The provider's discovery document and keys are fetched over an injected `ClientSession` and
cached; the ID token is validated with joserfc (signature against the provider's JWKS, then
issuer, audience, expiry and the nonce this sign-in sent). A group claim maps to a role; a
person in no mapped group is refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from collector.settings import Settings
from collector.store.base import ROLES, Role

ALGORITHMS = ["RS256", "ES256", "PS256"]
_TIMEOUT = aiohttp.ClientTimeout(total=10)
_RANK = {"viewer": 0, "billing": 1, "technician": 2, "admin": 3}


class OidcError(Exception):
    """A sign-in the collector refuses; `reason` is what the audit log records."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_roles(text: str) -> dict[str, Role]:
    """`"noc-admins=admin, techs=technician"` as a mapping; a ValueError names a bad entry."""
    mapping: dict[str, Role] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        group, sep, role = (part.strip() for part in entry.rpartition("="))
        if not sep or not group or role not in ROLES:
            raise ValueError(f"{entry!r} is not GROUP=ROLE with a role of {', '.join(ROLES)}")
        mapping[group] = next(r for r in ROLES if r == role)
    return mapping


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_url: str
    group_claim: str
    name_claim: str
    roles: dict[str, Role]

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        if not settings.oidc_issuer:
            return None
        secret = Path(settings.oidc_client_secret_file).read_text().strip()
        return cls(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=secret,
            redirect_url=settings.oidc_redirect_url,
            group_claim=settings.oidc_group_claim,
            name_claim=settings.oidc_name_claim,
            roles=parse_roles(settings.oidc_roles),
        )


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """What the browser carries (sealed) from the redirect to the callback."""

    state: str
    nonce: str
    verifier: str
    next_url: str

    @classmethod
    def new(cls, next_url: str) -> PendingSignIn:
        return cls(
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),
            next_url,
        )


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str  # issuer and sub, which together name one person for good
    name: str
    role: Role
    groups: tuple[str, ...]
    authenticated_at: datetime | None


def role_for(groups: list[str], roles: dict[str, Role]) -> Role | None:
    """The most privileged role any of the groups maps to."""
    best: Role | None = None
    for group in groups:
        role = roles.get(group)
        if role is not None and (best is None or _RANK[role] > _RANK[best]):
            best = role
    return best


class OidcClient:
    def __init__(self, config: OidcConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._session = session
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session.get(url, timeout=_TIMEOUT) as resp:
                if resp.status != 200:
                    raise OidcError("provider_unavailable", f"{url} answered {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise OidcError("provider_unavailable", f"{url}: {exc}") from exc
        if not isinstance(data, dict):
            raise OidcError("provider_unavailable", f"{url} did not answer a JSON object")
        return data

    async def metadata(self) -> dict[str, Any]:
        async with self._lock:
            if self._metadata is None:
                url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
                data = await self._get_json(url)
                if data.get("issuer") != self.config.issuer:
                    raise OidcError(
                        "issuer_mismatch", f"the discovery document names {data.get('issuer')!r}"
                    )
                for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(data.get(name), str):
                        raise OidcError("provider_unavailable", f"discovery lacks {name}")
                self._metadata = data
            return self._metadata

    async def _key_set(self, refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            meta = await self.metadata()
            try:
                self._keys = KeySet.import_key_set(await self._get_json(meta["jwks_uri"]))  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as exc:
                raise OidcError("provider_unavailable", f"unusable JWKS: {exc}") from exc
        return self._keys

    async def authorization_url(self, pending: PendingSignIn, *, force_login: bool) -> str:
        meta = await self.metadata()
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_url,
            "scope": "openid profile email",
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": code_challenge(pending.verifier),
            "code_challenge_method": "S256",
        }
        if force_login:  # re-authentication: the provider must ask again
            query["prompt"] = "login"
            query["max_age"] = "0"
        return f"{meta['authorization_endpoint']}?{urlencode(query)}"

    async def exchange(self, code: str, pending: PendingSignIn) -> str:
        """The ID token the provider gives for the authorization code."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "code_verifier": pending.verifier,
        }
        # client_secret_basic: each part form-urlencoded first (RFC 6749, 2.3.1).
        pair = f"{quote_plus(self.config.client_id)}:{quote_plus(self.config.client_secret)}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        try:
            async with self._session.post(
                meta["token_endpoint"],
                data=form,
                headers={"Authorization": auth},
                timeout=_TIMEOUT,
            ) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise OidcError("provider_unavailable", f"token endpoint: {exc}") from exc
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("id_token"), str):
            error = data.get("error") if isinstance(data, dict) else None
            raise OidcError("code_refused", f"the provider refused the code ({error or status})")
        return str(data["id_token"])

    async def validate(self, id_token: str, pending: PendingSignIn, now: datetime) -> Identity:
        """The person the ID token names, after every check; `OidcError` otherwise."""
        token = None
        for refresh in (False, True):  # a key not known yet: the provider rotated its keys
            keys = await self._key_set(refresh)
            try:
                token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
                break
            except JoseError as exc:
                if refresh or "key" not in type(exc).__name__.lower():
                    raise OidcError("bad_signature", f"ID token refused: {exc}") from exc
        assert token is not None
        registry = jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=60,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": pending.nonce},
        )
        try:
            registry.validate(token.claims)
        except JoseError as exc:
            reason = "wrong_nonce" if "nonce" in str(exc) else "bad_claims"
            raise OidcError(reason, f"ID token refused: {exc}") from exc
        claims = token.claims
        audience = claims.get("aud")
        several = isinstance(audience, list) and len(audience) > 1
        if several and claims.get("azp") != self.config.client_id:
            raise OidcError("bad_claims", "ID token for several audiences without our azp")
        groups_raw = claims.get(self.config.group_claim, [])
        groups = (
            [g for g in groups_raw if isinstance(g, str)] if isinstance(groups_raw, list) else []
        )
        role = role_for(groups, self.config.roles)
        name = claims.get(self.config.name_claim) or claims.get("email") or claims["sub"]
        if role is None:
            raise OidcError("no_role", f"{name} is in no group mapped to a role")
        auth_time = claims.get("auth_time")
        return Identity(
            subject=f"{claims['iss']}|{claims['sub']}",
            name=str(name),
            role=role,
            groups=tuple(groups),
            authenticated_at=(
                datetime.fromtimestamp(auth_time, now.tzinfo)
                if isinstance(auth_time, int)
                else None
            ),
        )
