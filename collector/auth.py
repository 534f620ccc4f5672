"""Who is calling: API tokens for people and jobs (with roles), agent tokens for agents.

Agent lookups are cached so a heartbeat costs no database read; every instance polls the shared
revocation feed, so a revoked token stops working everywhere within `auth_cache_s`.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Literal

from aiohttp import web

from collector.errors import ApiError
from collector.proxies import client_address
from collector.settings import Network
from collector.store.base import AgentIdentity, ApiTokenInfo, Role, Store
from collector.tokens import hash_token

Permission = Literal[
    "machines.read",
    "commands.read",
    "offboard.request",
    "inventory.read",
    "audit.read",
    "clients.manage",
    "machines.approve",  # let known hardware enroll again (a re-image, a move)
    "machines.reprice",  # confirm the billed kind of a machine
    "devices.dismiss",  # hide an unmanaged device that needs no agent (and restore it)
    "users.manage",  # add people, disable them, reset their second factor
]

_VIEWER: frozenset[Permission] = frozenset({"machines.read", "commands.read"})
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "viewer": _VIEWER,
    "technician": _VIEWER | {"offboard.request", "machines.approve", "devices.dismiss"},
    "billing": _VIEWER | {"inventory.read"},
    "admin": _VIEWER
    | {
        "offboard.request",
        "inventory.read",
        "audit.read",
        "clients.manage",
        "machines.approve",
        "machines.reprice",
        "devices.dismiss",
        "users.manage",
    },
}


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class FailedAuthLimiter:
    """Slows down token guessing: failed attempts beyond the limit from one address get 429.

    Only failures are counted and limited: a request with a valid token is always checked first and
    never refused here.
    """

    def __init__(
        self,
        max_failures: int = 30,
        window_s: float = 60.0,
        trusted_proxies: tuple[Network, ...] = (),
        max_addresses: int = 100_000,
    ) -> None:
        self._max = max_failures
        self._window = window_s
        self._trusted_proxies = trusted_proxies
        self._failures: dict[str, deque[float]] = {}
        self._max_addresses = max_addresses
        self._prune_at = max_addresses

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._failures)

    def address(self, request: web.Request) -> str:
        """The client's address, which failures are counted against (see `proxies`)."""
        return client_address(request, self._trusted_proxies)

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] <= now - self._window:
            times.popleft()
        return times

    def _forget_quiet_addresses(self, now: float) -> None:
        """Addresses with no failure within the window are forgotten. Pruning again only once
        the table has doubled keeps it linear overall, however many addresses keep failing."""
        horizon = now - self._window
        self._failures = {a: t for a, t in self._failures.items() if t and t[-1] > horizon}
        self._prune_at = max(self._max_addresses, 2 * len(self._failures))

    def fail(self, request: web.Request, error: ApiError) -> ApiError:
        """Count a failed attempt; the error to answer with (429 once over the limit)."""
        return self.fail_from(self.address(request), error)

    def fail_from(self, address: str, error: ApiError) -> ApiError:
        now = time.monotonic()
        recent = self._recent(address, now)
        recent.append(now)
        if len(self._failures) > self._prune_at:
            self._forget_quiet_addresses(now)
        if len(recent) > self._max:
            return ApiError(
                429,
                "too_many_failed_attempts",
                "too many failed authentication attempts; try again later",
            )
        return error


class AgentTokenCache:
    """Entries are plain tuples of strings, which the garbage collector stops tracking: with a
    million cached agents, tracked objects made full collections stall the loop for 100+ ms."""

    def __init__(self, store: Store, max_entries: int = 2_000_000) -> None:
        self._store = store
        self._entries: dict[str, tuple[str, str, str, str]] = {}
        self._max = max_entries
        self._seq = -1

    async def start(self) -> None:
        _, self._seq = await self._store.revocations_since(-1)

    def cached(self, digest: str) -> AgentIdentity | None:
        """The identity behind a token digest if it is cached; no await on the hot path."""
        entry = self._entries.get(digest)
        return None if entry is None else AgentIdentity(*entry)

    async def load(self, digest: str) -> AgentIdentity | None:
        """Look the digest up in the store, and cache what is found."""
        identity = await self._store.find_agent(digest)
        if identity is not None:
            if len(self._entries) >= self._max:
                # Forget the oldest tenth (insertion order), not everything at once.
                for stale in list(itertools.islice(self._entries, self._max // 10)):
                    del self._entries[stale]
            self._entries[digest] = (
                identity.agent_id,
                identity.machine_id,
                identity.client_id,
                identity.approval_policy,
            )
        return identity

    def remember_policy(self, token: str, identity: AgentIdentity, policy: str) -> None:
        """The agent's new approval policy, once it is stored (so it is written once)."""
        digest = hash_token(token)
        if digest in self._entries:
            self._entries[digest] = (
                identity.agent_id,
                identity.machine_id,
                identity.client_id,
                policy,
            )

    async def lookup(self, token: str) -> AgentIdentity | None:
        digest = hash_token(token)
        return self.cached(digest) or await self.load(digest)

    async def apply_revocations(self) -> int:
        """Drop every token revoked since the last poll (by any collector instance)."""
        revoked, self._seq = await self._store.revocations_since(self._seq)
        for digest in revoked:
            self._entries.pop(digest, None)
        return len(revoked)


def cached_agent(request: web.Request, agents: AgentTokenCache) -> AgentIdentity | None:
    """The hot path: a plainly written bearer token that is already cached. Anything else (no
    header, odd spacing, a token not cached yet, a bad token) gets None and goes the long way,
    through `authenticate_agent`."""
    header = request.headers.get("Authorization")
    if header is None or not header.startswith("Bearer "):
        return None
    return agents.cached(hash_token(header[7:]))


async def authenticate_person(
    request: web.Request,
    store: Store,
    agents: AgentTokenCache,
    limiter: FailedAuthLimiter,
    permission: Permission,
) -> ApiTokenInfo:
    """The API token's owner, if its role grants `permission`; 401/403 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise limiter.fail(
            request,
            ApiError(401, "missing_token", "send an API token as 'Authorization: Bearer <token>'"),
        )
    info = await store.find_api_token(hash_token(token))
    if info is None:
        if await agents.lookup(token) is not None:
            raise ApiError(
                403, "agent_token_not_allowed", "an agent token opens only the agent endpoints"
            )
        raise limiter.fail(
            request, ApiError(401, "invalid_token", "the API token is unknown or revoked")
        )
    if permission not in PERMISSIONS[info.role]:
        raise ApiError(
            403, "forbidden", f"the {info.role} role may not do this (needs {permission})"
        )
    return info


async def authenticate_agent(
    request: web.Request, store: Store, agents: AgentTokenCache, limiter: FailedAuthLimiter
) -> AgentIdentity:
    token = bearer_token(request)
    if token is not None:
        digest = hash_token(token)
        identity = agents.cached(digest) or await agents.load(digest)
        if identity is not None:
            return identity
    if token is None:
        raise limiter.fail(
            request,
            ApiError(
                401, "missing_token", "send the agent token as 'Authorization: Bearer <token>'"
            ),
        )
    if await store.find_api_token(digest) is not None:
        raise ApiError(403, "api_token_not_allowed", "this endpoint is for agents only")
    raise limiter.fail(
        request, ApiError(401, "invalid_token", "the agent token is unknown or revoked")
    )
