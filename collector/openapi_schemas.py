"""Pieces of the OpenAPI document: response schemas that no request struct describes (the
request bodies' schemas come from their msgspec structs, in `collector.openapi`, and the query
parameters from the structs in `collector.requests`) and the helpers that write an operation."""

from __future__ import annotations

from typing import Any

from collector.requests import Query, parameter_schemas
from collector.store.records import COMMAND_STATES, MACHINE_STATES

INSTANT = {"type": "string", "format": "date-time"}
COMPONENTS = {"type": "array", "items": {"$ref": "#/components/schemas/Component"}}

EXTRA_SCHEMAS: dict[str, Any] = {
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
            "first_seen": INSTANT,
            "last_seen": INSTANT,
            "state": {"enum": list(MACHINE_STATES)},
            "offboarded_at": {"anyOf": [INSTANT, {"type": "null"}]},
            "agent_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "components": COMPONENTS,
            "agent_version": {"type": ["string", "null"]},
            "users": {"type": ["array", "null"], "items": {"type": "string"}},
            "addresses": {"type": ["array", "null"], "items": {"type": "string"}},
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
            "first_seen": INSTANT,
            "last_seen": INSTANT,
            "offboarded_at": {"anyOf": [INSTANT, {"type": "null"}]},
            "moved_at": {"anyOf": [INSTANT, {"type": "null"}]},
            "moved_to_client_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "pending_kind": {"anyOf": [{"enum": ["pc", "server"]}, {"type": "null"}]},
            "components": COMPONENTS,
        },
    },
    "Inventory": {
        "type": "object",
        "properties": {
            "as_of": INSTANT,
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
                        "at": INSTANT,
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
            "state": {"enum": list(COMMAND_STATES)},
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
            "state": {"enum": list(COMMAND_STATES)},
            "issuer": {"type": "string"},
            "reason": {"type": "string"},
            "ticket": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "sequence": {"type": "integer"},
            "created_at": INSTANT,
            "delivered_at": {"anyOf": [INSTANT, {"type": "null"}]},
            "delivery_count": {"type": "integer"},
            "completed_at": {"anyOf": [INSTANT, {"type": "null"}]},
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
            "as_of": INSTANT,
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


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": ref(name)}}}


ERRORS = {
    str(code): {"description": text, **json_body("ErrorBody")}
    for code, text in (
        (400, "bad input"),
        (401, "missing or bad token"),
        (403, "wrong role or token kind"),
        (404, "not found"),
        (413, "body over 1 MiB"),
        (429, "too many failed authentications"),
    )
}


def query_params(query: type[Query]) -> list[dict[str, Any]]:
    """The operation's query parameters: the fields of the struct its handler decodes the query
    string with (`collector.bodies.read_query`), each with that field's schema."""
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": schema.get("description", name),
            "schema": {k: v for k, v in schema.items() if k != "description"},
        }
        for name, schema in parameter_schemas(query).items()
    ]


def operation(
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
        "responses": {ok: {"description": ok_text}, **ERRORS},
    }
    if ok_schema is not None:
        op["responses"][ok].update(json_body(ok_schema))
    if body is not None:
        op["requestBody"] = {"required": True, **json_body(body)}
    op["security"] = [{security: []}] if security else []
    if params:
        op["parameters"] = params
    return op


MACHINE_ID = {"name": "machine_id", "in": "path", "required": True, "schema": {"type": "string"}}
COMMAND_ID = {"name": "command_id", "in": "path", "required": True, "schema": {"type": "string"}}


def path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }
