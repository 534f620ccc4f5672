"""Endpoints agents call. They ignore fields they do not know, so newer agents keep working."""

from __future__ import annotations

import functools
import logging
import operator
import uuid
import zlib
from datetime import datetime, timedelta

import msgspec
from aiohttp import web

from collector.appkeys import (
    AGENT_TOKENS,
    AUTH_LIMITER,
    BUFFER,
    CLOCK,
    ENROLLMENT_PACE,
    METRICS,
    NETWORK,
    OPEN_COMMANDS,
    SETTINGS,
    SIGNER,
    STORE,
)
from collector.auth import authenticate_agent, bearer_token, cached_agent
from collector.bodies import decode_with, json_response, read_json
from collector.clones import CLONE_SPLITS, after_enrollment, prepare_enrollment, refuse_split_copy
from collector.commands import deliver
from collector.errors import ApiError, json_routes
from collector.fast_decode import FastDecoder
from collector.network_buffer import ReceivedHeartbeat
from collector.rules.orders import policy_text
from collector.store.base import (
    AgentEvent,
    AgentIdentity,
    AuditEntry,
    EnrollRequestRecord,
    Facts,
    NotFound,
    TokenUsedUp,
)
from collector.tokens import hash_token, new_token
from wire.messages import (
    Component,
    EnrollPending,
    EnrollRequest,
    EnrollResponse,
    EventsRequest,
    EventsResponse,
    HeartbeatResponse,
)
from wire.times import InstantError, parse_instant

routes = json_routes()

# An event's detail is a few fields of diagnostics; a megabyte of it is a flood, not an event.
MAX_EVENT_DETAIL = 4096
log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
decode_with(ReceivedHeartbeat, FastDecoder(ReceivedHeartbeat))  # the hot path
_by_name = operator.attrgetter("name")


def components_json(components: list[Component]) -> str:
    """Canonical form (sorted by name), so an unchanged list compares equal in the database."""
    return _encode(sorted(components, key=_by_name)).decode()


def next_heartbeat_s(interval_s: int, agent_id: str) -> int:
    """The interval with a fixed per-agent jitter of up to ±10%, so a fleet does not synchronise."""
    spread = (zlib.crc32(agent_id.encode()) % 2001 - 1000) / 10_000
    return max(1, round(interval_s * (1 + spread)))


# The store keeps the offset as a 32-bit integer: beyond ~24 days either way it reads as that.
_MAX_OFFSET_MS = 2**31 - 1


def clock_offset_ms(agent_time: str, now: datetime) -> int:
    """The agent's clock minus the collector's (which is trusted), in milliseconds."""
    try:
        agent_now = parse_instant(agent_time)
    except InstantError as exc:
        raise ApiError(400, "invalid_body", f"agent_time: {exc}") from exc
    offset = round((agent_now - now).total_seconds() * 1000)
    return max(-_MAX_OFFSET_MS, min(_MAX_OFFSET_MS, offset))


@functools.lru_cache(maxsize=4096)
def _empty_reply(next_s: int) -> bytes:
    """The answer to almost every heartbeat, encoded once per interval value (a few dozen)."""
    return _encode(HeartbeatResponse(next_heartbeat_s=next_s, commands=[]))


@routes.post("/v1/enroll")
async def enroll(request: web.Request) -> web.Response:
    app = request.app
    body = await read_json(request, EnrollRequest)
    token_hash = hash_token(body.enrollment_token)
    if not app[ENROLLMENT_PACE].allow(token_hash):
        raise ApiError(
            429,
            "enrollment_rate_limited",
            "this enrollment token enrolled too many machines in the last minute; try later",
            headers={"Retry-After": "60"},
        )
    agent_id = str(uuid.uuid4())
    agent_token = new_token("agent")
    now = app[CLOCK].now()
    record = EnrollRequestRecord(
        enrollment_token_hash=token_hash,
        hardware_id=body.hardware_id,
        facts=Facts(hostname=body.hostname, os=body.os, kind=body.kind, components_json="[]"),
        agent_id=agent_id,
        agent_token_hash=hash_token(agent_token),
        agent_version=body.agent_version,
        previous_agent_token_hash=None
        if body.previous_agent_token is None
        else hash_token(body.previous_agent_token),
        address=app[AUTH_LIMITER].address(request),
    )
    prep = await prepare_enrollment(app, record, now=now)  # clones (coverage)
    try:
        outcome = await app[STORE].enroll(
            prep.request, now=now, gap_s=app[SETTINGS].online_window_s
        )
    except NotFound as exc:
        error = ApiError(401, "invalid_enrollment_token", str(exc))
        raise app[AUTH_LIMITER].fail(request, error) from exc
    except TokenUsedUp as exc:
        raise ApiError(403, "enrollment_token_used_up", str(exc)) from exc
    await after_enrollment(app, prep, outcome, now=now)
    if outcome.held:
        app[METRICS].security_events.labels(kind="reenroll_held").inc()
        return json_response(
            EnrollPending(
                state="awaiting_approval",
                detail="this hardware is already enrolled: a technician must approve it enrolling "
                "again (rmm-collector machine approve-reenroll MACHINE_ID, or the machine's "
                "page), or the agent must prove its previous credential",
            ),
            status=202,
        )
    if outcome.reenrolled or outcome.moved_from:
        await app[AGENT_TOKENS].apply_revocations()
    app[METRICS].enrollments.inc()
    await _alert_on_burst(app, token_hash, outcome.client_id, now)
    return json_response(
        EnrollResponse(
            agent_id=outcome.agent_id,
            agent_token=agent_token,
            machine_id=outcome.machine_id,
            heartbeat_interval_s=next_heartbeat_s(app[SETTINGS].heartbeat_interval_s, agent_id),
        ),
        status=201,
    )


async def _alert_on_burst(
    app: web.Application, token_hash: str, client_id: str, now: datetime
) -> None:
    """One token enrolling many machines within an hour is recorded once, as it crosses."""
    threshold = app[SETTINGS].enrollment_alert_per_hour
    count = await app[STORE].enrollments_by_token_since(token_hash, now - timedelta(hours=1))
    if count != threshold + 1:
        return
    app[METRICS].security_events.labels(kind="enrollment_burst").inc()
    log.warning(
        "an enrollment token of client %s enrolled %d machines within an hour", client_id, count
    )
    await app[STORE].add_audit(
        AuditEntry(
            now,
            "system",
            "enrollment_token.burst",
            client_id,
            {"enrolled_last_hour": count, "threshold": threshold},
        )
    )


@routes.post("/v1/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    app = request.app
    tokens = app[AGENT_TOKENS]
    identity = cached_agent(request, tokens) or await authenticate_agent(
        request, app[STORE], tokens, app[AUTH_LIMITER]
    )
    body = await read_json(request, ReceivedHeartbeat)
    now = app[CLOCK].now()
    split = app[CLONE_SPLITS].get(identity.machine_id)
    if split is not None and body.hostname is not None and body.hostname.lower() == split:
        raise refuse_split_copy(identity.machine_id)
    app[BUFFER].add(
        identity.machine_id,
        now,
        hostname=body.hostname,
        os=body.os,
        kind=body.kind,
        components_json=components_json(body.components),
        clock_offset_ms=None if body.agent_time is None else clock_offset_ms(body.agent_time, now),
        agent_version=body.agent_version,
        users=body.users,
    )
    if body.offboard_approvals is not None:
        await _follow_approval_policy(request, identity, body, now)
    if body.network:
        app[NETWORK].add(identity.machine_id, identity.client_id, now, bytes(body.network))
    metrics = app[METRICS]
    metrics.heartbeats_total += 1
    next_s = next_heartbeat_s(app[SETTINGS].heartbeat_interval_s, identity.agent_id)
    if identity.machine_id not in app[OPEN_COMMANDS]:
        return web.Response(body=_empty_reply(next_s), content_type="application/json")
    commands = await deliver(
        app[STORE],
        app[OPEN_COMMANDS],
        app[SIGNER],
        identity,
        body.key_ids,
        now,
        approvals_required=body.offboard_approvals,
    )
    metrics.commands_delivered.inc(len(commands))
    return json_response(HeartbeatResponse(next_heartbeat_s=next_s, commands=commands))


async def _follow_approval_policy(
    request: web.Request, identity: AgentIdentity, body: ReceivedHeartbeat, now: datetime
) -> None:
    """Store what the agent requires of an offboard order when it changed (rarely: at its
    first heartbeat after an upgrade or a change of its config), so delivery waits for it."""
    assert body.offboard_approvals is not None
    policy = policy_text(body.offboard_approvals, body.operator_key_ids)
    if policy == identity.approval_policy:
        return
    app = request.app
    await app[STORE].record_approval_policy(
        identity.machine_id, body.offboard_approvals, body.operator_key_ids or [], now=now
    )
    app[OPEN_COMMANDS].add(identity.machine_id)  # delivered now if the order became ready
    token = bearer_token(request)
    if token is not None:
        app[AGENT_TOKENS].remember_policy(token, identity, policy)


@routes.post("/v1/events")
async def events(request: web.Request) -> web.Response:
    app = request.app
    identity = await authenticate_agent(request, app[STORE], app[AGENT_TOKENS], app[AUTH_LIMITER])
    body = await read_json(request, EventsRequest)
    records = []
    for index, event in enumerate(body.events):
        try:
            at = parse_instant(event.at)
        except InstantError as exc:
            raise ApiError(400, "invalid_body", f"events[{index}].at: {exc}") from exc
        detail = _encode(event.detail)
        if len(detail) > MAX_EVENT_DETAIL:
            raise ApiError(
                413,
                "event_detail_too_large",
                f"events[{index}].detail is {len(detail)} bytes; at most {MAX_EVENT_DETAIL}",
            )
        if b"\\u0000" in detail:
            raise ApiError(400, "invalid_text", f"events[{index}].detail contains a NUL character")
        records.append(AgentEvent(event.event_id, at, event.type, detail.decode()))
    now = app[CLOCK].now()
    limit = app[SETTINGS].events_per_hour
    recent = await app[STORE].events_received_since(identity.machine_id, now - timedelta(hours=1))
    if recent + len(records) > limit:
        app[METRICS].security_events.labels(kind="event_quota").inc()
        raise ApiError(
            429,
            "event_quota_exceeded",
            f"this agent sent {recent} events in the last hour; at most {limit} are kept",
            headers={"Retry-After": "3600"},
        )
    accepted = await app[STORE].record_events(identity, records, now=now)
    return json_response(EventsResponse(accepted=accepted))
