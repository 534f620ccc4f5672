"""The OpenAPI 3 description of every endpoint; a test keeps it in step with the routes."""

from __future__ import annotations

from typing import Any

import msgspec

from collector import __version__
from collector.requests import PEOPLE_BODIES
from wire.messages import (
    CommandProgressRequest,
    CommandResultRequest,
    CommandResultResponse,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    EventsRequest,
    EventsResponse,
    HeartbeatRequest,
    HeartbeatResponse,
)

_STRUCTS = (
    *PEOPLE_BODIES,
    EnrollRequest,
    EnrollResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    EventsRequest,
    EventsResponse,
    ErrorBody,
    CommandResultRequest,
    CommandResultResponse,
    CommandProgressRequest,
)

_INSTANT = {"type": "string", "format": "date-time"}
_COMPONENTS = {"type": "array", "items": {"$ref": "#/components/schemas/Component"}}

_EXTRA_SCHEMAS: dict[str, Any] = {
    "Machine": {
        "type": "object",
        "required": [
            "machine_id",
            "client_id",
            "hostname",
            "kind",
            "first_seen",
            "last_seen",
            "state",
            "components",
        ],
        "properties": {
            "machine_id": {"type": "string"},
            "client_id": {"type": "string"},
            "hostname": {"type": "string"},
            "os": {"type": "string"},
            "kind": {"enum": ["pc", "server"]},
            "first_seen": _INSTANT,
            "last_seen": _INSTANT,
            "state": {
                "enum": [
                    "online",
                    "offline",
                    "expired",
                    "offboard_pending",
                    "offboarded",
                    "offboard_failed",
                ]
            },
            "offboarded_at": {"anyOf": [_INSTANT, {"type": "null"}]},
            "agent_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "components": _COMPONENTS,
        },
    },
    "MachineList": {
        "type": "object",
        "properties": {
            "machines": {"type": "array", "items": {"$ref": "#/components/schemas/Machine"}},
            "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    },
    "InventoryMachine": {
        "type": "object",
        "properties": {
            "machine_id": {"type": "string"},
            "client_id": {"type": "string"},
            "hostname": {"type": "string"},
            "kind": {"enum": ["pc", "server"]},
            "first_seen": _INSTANT,
            "last_seen": _INSTANT,
            "offboarded_at": {"anyOf": [_INSTANT, {"type": "null"}]},
            "moved_at": {"anyOf": [_INSTANT, {"type": "null"}]},
            "moved_to_client_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "components": _COMPONENTS,
        },
    },
    "Inventory": {
        "type": "object",
        "properties": {
            "as_of": _INSTANT,
            "machines": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/InventoryMachine"},
            },
            "unmanaged": {
                "type": "array",
                "description": "devices seen in the 30 days before as_of that carry no agent "
                "and were not dismissed by then",
                "items": {"$ref": "#/components/schemas/InventoryDevice"},
            },
        },
    },
    "AuditLog": {
        "type": "object",
        "properties": {
            "entries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "at": _INSTANT,
                        "actor": {"type": "string"},
                        "action": {"type": "string"},
                        "target": {"type": "string"},
                        "detail": {"type": "object"},
                    },
                },
            },
            "next_before": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
    },
    "CommandAccepted": {
        "type": "object",
        "properties": {
            "command_id": {"type": "string"},
            "state": {"enum": ["offboard_pending", "offboarded", "offboard_failed"]},
        },
    },
    "Command": {
        "type": "object",
        "properties": {
            "command_id": {"type": "string"},
            "type": {"enum": ["offboard"]},
            "machine_id": {"type": "string"},
            "client_id": {"type": "string"},
            "agent_id": {"type": "string"},
            "state": {"enum": ["offboard_pending", "offboarded", "offboard_failed"]},
            "issuer": {"type": "string"},
            "reason": {"type": "string"},
            "ticket": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "sequence": {"type": "integer"},
            "created_at": _INSTANT,
            "delivered_at": {"anyOf": [_INSTANT, {"type": "null"}]},
            "delivery_count": {"type": "integer"},
            "completed_at": {"anyOf": [_INSTANT, {"type": "null"}]},
            "result": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "rejections": {"type": "integer"},
        },
    },
    "CommandList": {
        "type": "object",
        "properties": {
            "commands": {"type": "array", "items": {"$ref": "#/components/schemas/Command"}},
            "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    },
    "ExposureReport": {
        "type": "object",
        "properties": {
            "as_of": _INSTANT,
            "expired_without_offboard": {"type": "array", "items": {"type": "object"}},
            "offboards_pending_over_7_days": {"type": "array", "items": {"type": "object"}},
        },
    },
    "HeldEnrollment": {
        "type": "object",
        "properties": {
            "machine_id": {"type": "string"},
            "client_id": {"type": "string"},
            "hostname": {"type": "string"},
            "address": {"type": ["string", "null"]},
            "first_at": {"type": "string", "format": "date-time"},
            "last_at": {"type": "string", "format": "date-time"},
            "attempts": {"type": "integer"},
        },
    },
    "HeldEnrollments": {
        "type": "object",
        "properties": {
            "held": {"type": "array", "items": {"$ref": "#/components/schemas/HeldEnrollment"}}
        },
    },
    "ReenrollApproval": {
        "type": "object",
        "properties": {
            "machine_id": {"type": "string"},
            "approved_until": {"type": "string", "format": "date-time"},
            "held": {"oneOf": [{"$ref": "#/components/schemas/HeldEnrollment"}, {"type": "null"}]},
        },
    },
    "MachineEvents": {
        "type": "object",
        "properties": {"events": {"type": "array", "items": {"type": "object"}}},
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


_ERRORS = {
    str(code): {"description": text, **_json("ErrorBody")}
    for code, text in (
        (400, "bad input"),
        (401, "missing or bad token"),
        (403, "wrong role or token kind"),
        (404, "not found"),
        (413, "body over 1 MiB"),
        (429, "too many failed authentications"),
    )
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _op(
    summary: str,
    ok: str,
    ok_schema: str | None,
    *,
    body: str | None = None,
    security: str | None = "apiToken",
    params: list[dict[str, Any]] | None = None,
    ok_text: str = "OK",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: {"description": ok_text}, **_ERRORS},
    }
    if ok_schema is not None:
        op["responses"][ok].update(_json(ok_schema))
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    op["security"] = [{security: []}] if security else []
    if params:
        op["parameters"] = params
    return op


_MACHINE_ID = {"name": "machine_id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMAND_ID = {"name": "command_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def build_spec() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _STRUCTS, ref_template="#/components/schemas/{name}"
    )
    schemas = {**components, **_EXTRA_SCHEMAS, **_COVERAGE_SCHEMAS}
    paths: dict[str, Any] = {
        "/v1/enroll": {
            "post": _op(
                "Enroll a machine with a client's enrollment token",
                "201",
                "EnrollResponse",
                body="EnrollRequest",
                security=None,
            )
        },
        "/v1/heartbeat": {
            "post": _op(
                "Report presence and component status; receive commands",
                "200",
                "HeartbeatResponse",
                body="HeartbeatRequest",
                security="agentToken",
            )
        },
        "/v1/events": {
            "post": _op(
                "Deliver spooled agent events (idempotent on event_id)",
                "200",
                "EventsResponse",
                body="EventsRequest",
                security="agentToken",
            )
        },
        "/v1/machines": {
            "get": _op(
                "List machines (viewer and up)",
                "200",
                "MachineList",
                params=[
                    _query("client", "client id"),
                    _query(
                        "state",
                        "online, offline, expired, offboard_pending, offboarded, offboard_failed",
                    ),
                    _query("kind", "pc or server"),
                    _query("hostname", "case-insensitive part of the hostname"),
                    _query("limit", "page size, 1 to 10000", {"type": "integer"}),
                    _query("cursor", "next_cursor of the previous page"),
                ],
            )
        },
        "/v1/machines/{machine_id}": {
            "get": _op("One machine", "200", "Machine", params=[_MACHINE_ID])
        },
        "/v1/machines/{machine_id}/events": {
            "get": _op(
                "Events the machine's agent reported, newest first",
                "200",
                "MachineEvents",
                params=[_MACHINE_ID, _query("limit", "at most this many", {"type": "integer"})],
            )
        },
        "/v1/inventory": {
            "get": _op(
                "Every machine enrolled before as_of, each field as it stood then (billing, admin)",
                "200",
                "Inventory",
                params=[
                    _query(
                        "as_of",
                        "ISO-8601 instant with offset; default now; not in the future",
                        {"type": "string", "format": "date-time"},
                    )
                ],
            )
        },
        "/v1/audit": {
            "get": _op(
                "The audit log, newest first (admin)",
                "200",
                "AuditLog",
                params=[
                    _query("actor", "exact actor"),
                    _query("action", "exact action"),
                    _query("target", "exact target"),
                    _query("since", "ISO-8601 instant", {"type": "string", "format": "date-time"}),
                    _query("before", "next_before of the previous page", {"type": "integer"}),
                    _query("limit", "page size, 1 to 5000", {"type": "integer"}),
                ],
            )
        },
        "/v1/machines/{machine_id}/offboard": {
            "post": _op(
                "Request an offboard (technician, admin); a pending one is answered again",
                "202",
                "CommandAccepted",
                body="OffboardRequest",
                params=[_MACHINE_ID],
            )
        },
        "/v1/commands": {
            "get": _op(
                "List commands (viewer and up)",
                "200",
                "CommandList",
                params=[
                    _query("state", "offboard_pending, offboarded or offboard_failed"),
                    _query("machine", "machine id"),
                    _query("limit", "page size, 1 to 5000", {"type": "integer"}),
                    _query("cursor", "next_cursor of the previous page"),
                ],
            )
        },
        "/v1/commands/{command_id}": {
            "get": _op("Follow one command", "200", "Command", params=[_COMMAND_ID])
        },
        "/v1/commands/{command_id}/result": {
            "post": _op(
                "An agent reports a command's outcome (only the owning agent)",
                "200",
                "CommandResultResponse",
                body="CommandResultRequest",
                security="agentToken",
                params=[_COMMAND_ID],
            )
        },
        "/v1/machines/{machine_id}/kind": {
            "post": _op(
                "Confirm or set a machine's billed kind (admin); billed so from now on",
                "200",
                "Machine",
                body="KindRequest",
                params=[_MACHINE_ID],
            )
        },
        "/v1/machines/{machine_id}/approve-reenroll": {
            "post": _op(
                "Let known hardware enroll again without its credential, within 24 hours "
                "(technician, admin)",
                "200",
                "ReenrollApproval",
                params=[_MACHINE_ID],
            )
        },
        "/v1/enrollments/held": {
            "get": _op(
                "Enrollments of known hardware held until a technician approves them",
                "200",
                "HeldEnrollments",
                params=[_query("machine", "machine id")],
            )
        },
        "/v1/commands/{command_id}/approvals": {
            "post": _op(
                "An operator's signature over the command's order (technician, admin); made "
                "locally with `rmm-collector remote approve`",
                "200",
                "Command",
                body="ApprovalRequest",
                params=[_COMMAND_ID],
            )
        },
        "/v1/approvals": {
            "post": _op(
                "Many approvals at once (a bulk offboard), each kept or refused on its own",
                "200",
                None,
                body="BatchApprovalRequest",
            )
        },
        "/v1/clients": {"get": _op("The clients by name", "200", None)},
        "/v1/clients/{client_id}/offboard": {
            "post": _op(
                "One order per live machine of the client, approved as one batch",
                "202",
                None,
                body="BulkOffboardRequest",
                params=[_path("client_id", "the client's id")],
                ok_text="Accepted",
            )
        },
        "/v1/batches/{batch_id}": {
            "get": _op(
                "The orders of a bulk offboard",
                "200",
                None,
                params=[_path("batch_id", "from POST /v1/clients/{client_id}/offboard")],
            )
        },
        "/v1/operators": {
            "get": _op("Registered operators (display only)", "200", None),
            "post": _op(
                "Register an operator's public key by name (admin)",
                "201",
                None,
                body="OperatorRequest",
                ok_text="Created",
            ),
        },
        "/v1/commands/{command_id}/progress": {
            "post": _op(
                "An agent reports the steps so far of a command it runs (only the owning agent)",
                "200",
                "CommandResultResponse",
                body="CommandProgressRequest",
                security="agentToken",
                params=[_COMMAND_ID],
            )
        },
        "/v1/reports/exposure": {
            "get": _op(
                "Licence exposure: expired without offboarding, offboards pending over 7 days",
                "200",
                "ExposureReport",
            )
        },
        "/healthz": {
            "get": _op(
                "Health: the database answers and took a write recently (else 503)",
                "200",
                None,
                security=None,
            )
        },
        "/metrics": {"get": _op("Prometheus metrics (text format)", "200", None, security=None)},
        "/v1/openapi.json": {"get": _op("This document", "200", None, security=None)},
        **_coverage_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "RMM collector API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API token of a person or job (role-based)",
                },
                "agentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "agent token from /v1/enroll",
                },
            },
        },
    }


# Coverage (issue 20): unmanaged devices, clones, the monthly coverage statement.
_CLIENT_ID = {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string"}}
_MAC = {
    "name": "mac",
    "in": "path",
    "required": True,
    "description": "a unicast MAC; aa:bb:cc:dd:ee:ff, dashes or any case",
    "schema": {"type": "string"},
}
_DEVICE_FIELDS: dict[str, Any] = {
    "mac": {"type": "string"},
    "ip": {"type": "string"},
    "first_seen": _INSTANT,
    "last_seen": _INSTANT,
}
_COVERAGE_SCHEMAS: dict[str, Any] = {
    "UnmanagedDevice": {
        "type": "object",
        "properties": {
            **_DEVICE_FIELDS,
            "seen_by": {"type": "array", "items": {"type": "string"}},
        },
    },
    "InventoryDevice": {
        "type": "object",
        "properties": {"client_id": {"type": "string"}, **_DEVICE_FIELDS},
    },
    "DismissedDevice": {
        "type": "object",
        "properties": {
            "mac": {"type": "string"},
            "ip": {"type": ["string", "null"]},
            "reason": {"type": "string"},
            "dismissed_by": {"type": "string"},
            "dismissed_at": _INSTANT,
            "last_seen": {"anyOf": [_INSTANT, {"type": "null"}]},
        },
    },
    "UnmanagedDevices": {
        "type": "object",
        "properties": {
            "devices": {"type": "array", "items": _ref("UnmanagedDevice")},
            "dismissed": {"type": "array", "items": _ref("DismissedDevice")},
        },
    },
    "CoverageStatement": {
        "type": "object",
        "description": "share = heard time (inside runs of presence) in which the component's "
        "latest report said running, over all heard time in the month (UTC); see "
        "collector.rules.coverage",
        "properties": {
            "client_id": {"type": "string"},
            "client_name": {"type": "string"},
            "month": {"type": "string"},
            "from": _INSTANT,
            "to": _INSTANT,
            "complete": {"type": "boolean"},
            "summary": {"type": "string"},
            "machines_total": {"type": "integer"},
            "machines_protected": {"type": "integer"},
            "machines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "machine_id": {"type": "string"},
                        "hostname": {"type": "string"},
                        "kind": {"enum": ["pc", "server"]},
                        "protected": {"type": "boolean"},
                        "heard_s": {"type": "number"},
                        "components": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "share": {"type": ["number", "null"]},
                                    "gaps": {"type": "array", "items": {"type": "object"}},
                                },
                            },
                        },
                        "silences": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "unmanaged": {"type": "array", "items": _ref("InventoryDevice")},
            "dismissed": {"type": "array", "items": _ref("DismissedDevice")},
        },
    },
    "CloneSuspicion": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "machine_id": {"type": "string"},
            "kind": {"enum": ["heartbeats", "enrollment"]},
            "detected_at": _INSTANT,
            "candidates": {
                "type": "array",
                "description": "the two copies seen; id 1 is the identity the record had first",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"enum": ["1", "2"]},
                        "hostname": {"type": ["string", "null"]},
                        "macs": {"type": "array", "items": {"type": "string"}},
                        "held": {"type": "boolean"},
                        "address": {"type": ["string", "null"]},
                    },
                },
            },
            "state": {"enum": ["open", "resolved"]},
            "resolved_at": {"anyOf": [_INSTANT, {"type": "null"}]},
            "resolved_by": {"type": ["string", "null"]},
            "reason": {"type": ["string", "null"]},
            "kept_hostname": {"type": ["string", "null"]},
            "split_hostname": {"type": ["string", "null"]},
            "split_machine_id": {"type": ["string", "null"]},
        },
    },
    "CloneSuspicions": {
        "type": "object",
        "properties": {"suspicions": {"type": "array", "items": _ref("CloneSuspicion")}},
    },
    "DeviceRestored": {
        "type": "object",
        "properties": {"mac": {"type": "string"}, "state": {"enum": ["restored"]}},
    },
}


def _coverage_paths() -> dict[str, Any]:
    return {
        "/v1/clients/{client_id}/unmanaged": {
            "get": _op(
                "Devices the client's agents saw in the last 30 days that carry no agent "
                "(viewer and up); dismissed=1 adds the dismissed ones",
                "200",
                "UnmanagedDevices",
                params=[_CLIENT_ID, _query("dismissed", "0 or 1")],
            )
        },
        "/v1/machines/{machine_id}/clones": {
            "get": _op(
                "The machine's clone suspicions, the open one first (viewer and up)",
                "200",
                "CloneSuspicions",
                params=[_MACHINE_ID],
            )
        },
        "/v1/machines/{machine_id}/clone/resolve": {
            "post": _op(
                "Keep one copy of a suspected clone; the other gets its own machine record at "
                "its next enrollment (technician, admin); 409 without an open suspicion or "
                "when both copies report one hostname",
                "200",
                "CloneSuspicion",
                body="ResolveCloneRequest",
                params=[_MACHINE_ID],
            )
        },
        "/v1/clients/{client_id}/coverage": {
            "get": _op(
                "The client's coverage statement for a month: per machine and required "
                "component the share of heartbeats it ran in, gaps, silences, unmanaged and "
                "dismissed devices, a summary line (viewer and up)",
                "200",
                "CoverageStatement",
                params=[_CLIENT_ID, _query("month", "YYYY-MM (UTC); default the current month")],
            )
        },
        "/v1/clients/{client_id}/unmanaged/{mac}/dismiss": {
            "post": _op(
                "Hide a device that needs no agent, audited with who and why (technician, "
                "admin); 409 if dismissed already",
                "200",
                "DismissedDevice",
                body="DismissRequest",
                params=[_CLIENT_ID, _MAC],
            )
        },
        "/v1/clients/{client_id}/unmanaged/{mac}/restore": {
            "post": _op(
                "List a dismissed device again, audited (technician, admin); 409 if it is not "
                "dismissed",
                "200",
                "DeviceRestored",
                body="RestoreRequest",
                params=[_CLIENT_ID, _MAC],
            )
        },
    }
