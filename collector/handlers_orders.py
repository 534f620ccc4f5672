"""Two-person offboarding through the API: orders to sign, approvals, operators, bulk orders.

Signing happens on the operators' own machines (`rmm-collector remote offboard|approve --key`);
the collector keeps the signatures, shows who signed, and delivers an order only once it has as
many approvals from keys the agent pins as the agent requires.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from collector.appkeys import CLOCK, OPEN_COMMANDS, STORE
from collector.bodies import check_query, json_response, read_json
from collector.errors import ApiError, json_routes
from collector.handlers_people import person, visible
from collector.requests import (
    ApprovalRequest,
    BatchApprovalRequest,
    BulkOffboardRequest,
    OperatorRequest,
)
from collector.rules.orders import ApprovalRefused
from collector.store.base import (
    ApiTokenInfo,
    CommandFilter,
    CommandRecord,
    Conflict,
    NotFound,
    Store,
)
from wire.messages import Approval
from wire.times import format_instant

routes = json_routes()


async def order_view(store: Store, command: CommandRecord) -> dict[str, Any]:
    """The order part of a command's JSON: the bytes to sign, who signed, what still lacks."""
    if command.order_b64 is None:
        return {}
    approvals = await store.command_approvals(command.command_id)
    policy = await store.approval_policy(command.machine_id)
    counted = set(policy.counted(approvals))
    return {
        "order": command.order_b64,
        "order_sha256": command.order_sha256,
        "batch_id": command.batch_id,
        "approvals_required": policy.required,
        "approvals": [
            {
                "key_id": a.key_id,
                "operator": a.operator,
                "actor": a.actor,
                "approved_at": format_instant(a.approved_at),
                # Refused: a key the machine's agent does not pin (it will not count there).
                "counted": a.key_id in counted,
            }
            for a in approvals
        ],
    }


async def _visible_command(store: Store, token: ApiTokenInfo, command_id: str) -> None:
    command = await store.get_command(command_id)
    if command is not None:
        visible(token, command.client_id, "command")


def _refused(exc: ApprovalRefused) -> ApiError:
    return ApiError(exc.status, exc.code, exc.detail)


@routes.post("/v1/commands/{command_id}/approvals")
async def approve(request: web.Request) -> web.Response:
    token = await person(request, "offboard.request")
    check_query(request, ())
    body = await read_json(request, ApprovalRequest)
    app = request.app
    await _visible_command(app[STORE], token, request.match_info["command_id"])
    try:
        command = await app[STORE].approve_command(
            request.match_info["command_id"],
            Approval(key_id=body.key_id, signature=body.signature),
            public_key=body.public_key,
            actor=token.name,
            now=app[CLOCK].now(),
        )
    except ApprovalRefused as exc:
        raise _refused(exc) from exc
    if command.state == "offboard_pending":
        app[OPEN_COMMANDS].add(command.machine_id)
    return json_response(
        {
            "command_id": command.command_id,
            "state": command.state,
            **await order_view(app[STORE], command),
        }
    )


@routes.post("/v1/approvals")
async def approve_batch(request: web.Request) -> web.Response:
    """Many approvals in one request (a bulk offboard signed in one go). Each is checked on
    its own; the answer says, per command, whether it was kept."""
    token = await person(request, "offboard.request")
    check_query(request, ())
    body = await read_json(request, BatchApprovalRequest)
    app = request.app
    results = []
    for item in body.approvals:
        try:
            await _visible_command(app[STORE], token, item.command_id)
            command = await app[STORE].approve_command(
                item.command_id,
                Approval(key_id=item.key_id, signature=item.signature),
                public_key=item.public_key,
                actor=token.name,
                now=app[CLOCK].now(),
            )
        except ApprovalRefused as exc:
            results.append({"command_id": item.command_id, "error": exc.code, "detail": exc.detail})
            continue
        except ApiError as exc:
            results.append({"command_id": item.command_id, "error": exc.code, "detail": exc.detail})
            continue
        if command.state == "offboard_pending":
            app[OPEN_COMMANDS].add(command.machine_id)
        results.append({"command_id": command.command_id, "state": command.state})
    return json_response({"results": results})


@routes.post("/v1/clients/{client_id}/offboard")
async def bulk_offboard(request: web.Request) -> web.Response:
    """One order per live machine of a client (a contract that ended). `expected_count`, the
    number the requester saw before confirming, must match, so nothing unseen is ordered."""
    token = await person(request, "offboard.request")
    check_query(request, ())
    body = await read_json(request, BulkOffboardRequest)
    if not body.reason.strip():
        raise ApiError(400, "invalid_body", "reason must say why the machines are offboarded")
    app = request.app
    store = app[STORE]
    client_id = request.match_info["client_id"]
    visible(token, client_id, "client")
    try:
        batch_id, commands = await store.request_bulk_offboard(
            client_id,
            issuer=token.name,
            reason=body.reason.strip(),
            ticket=body.ticket,
            now=app[CLOCK].now(),
            expected_count=body.expected_count,
        )
    except NotFound as exc:
        raise ApiError(404, "client_not_found", str(exc)) from exc
    except Conflict as exc:
        raise ApiError(409, "count_changed", str(exc)) from exc
    for command in commands:
        if command.state == "offboard_pending":
            app[OPEN_COMMANDS].add(command.machine_id)
    return json_response(
        {"batch_id": batch_id, "commands": [await _batch_item(store, c) for c in commands]},
        status=202,
    )


async def _batch_item(store: Store, command: CommandRecord) -> dict[str, Any]:
    return {
        "command_id": command.command_id,
        "machine_id": command.machine_id,
        "state": command.state,
        "reason": command.reason,
        **await order_view(store, command),
    }


@routes.get("/v1/batches/{batch_id}")
async def get_batch(request: web.Request) -> web.Response:
    token = await person(request, "commands.read")
    check_query(request, ())
    store = request.app[STORE]
    batch_id = request.match_info["batch_id"]
    commands = await store.list_commands(
        CommandFilter(batch_id=batch_id, limit=100_000, client_ids=token.clients)
    )
    if not commands:
        raise ApiError(404, "batch_not_found", "no bulk offboard has that id")
    return json_response(
        {"batch_id": batch_id, "commands": [await _batch_item(store, c) for c in commands]}
    )


@routes.get("/v1/operators")
async def list_operators(request: web.Request) -> web.Response:
    await person(request, "machines.read")
    check_query(request, ())
    operators = await request.app[STORE].list_operators()
    return json_response(
        {
            "operators": [
                {
                    "name": o.name,
                    "key_id": o.key_id,
                    "public_key": o.public_key,
                    "added_at": format_instant(o.added_at),
                    "added_by": o.added_by,
                }
                for o in operators
            ]
        }
    )


@routes.post("/v1/operators")
async def add_operator(request: web.Request) -> web.Response:
    """Register an operator's key by name (admin), so the collector can show who signed."""
    token = await person(request, "clients.manage")
    check_query(request, ())
    body = await read_json(request, OperatorRequest)
    app = request.app
    try:
        operator = await app[STORE].add_operator(
            body.name.strip(), body.public_key, now=app[CLOCK].now(), actor=token.name
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_key", f"public_key: {exc}") from exc
    except Conflict as exc:
        raise ApiError(409, "operator_exists", str(exc)) from exc
    return json_response({"name": operator.name, "key_id": operator.key_id}, status=201)
