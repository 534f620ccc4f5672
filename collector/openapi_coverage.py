"""The OpenAPI paths of coverage: unmanaged devices, coverage statements, clone suspicions."""

from __future__ import annotations

from typing import Any

from collector.openapi_schemas import (
    INSTANT,
    MACHINE_ID,
    operation,
    query_params,
    ref,
)
from collector.requests import CoverageQuery, UnmanagedQuery

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
    "first_seen": INSTANT,
    "last_seen": INSTANT,
}
COVERAGE_SCHEMAS: dict[str, Any] = {
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
            "dismissed_at": INSTANT,
            "last_seen": {"anyOf": [INSTANT, {"type": "null"}]},
        },
    },
    "UnmanagedDevices": {
        "type": "object",
        "properties": {
            "devices": {"type": "array", "items": ref("UnmanagedDevice")},
            "dismissed": {"type": "array", "items": ref("DismissedDevice")},
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
            "from": INSTANT,
            "to": INSTANT,
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
            "unmanaged": {"type": "array", "items": ref("InventoryDevice")},
            "dismissed": {"type": "array", "items": ref("DismissedDevice")},
        },
    },
    "CloneSuspicion": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "machine_id": {"type": "string"},
            "kind": {"enum": ["heartbeats", "enrollment"]},
            "detected_at": INSTANT,
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
            "resolved_at": {"anyOf": [INSTANT, {"type": "null"}]},
            "resolved_by": {"type": ["string", "null"]},
            "reason": {"type": ["string", "null"]},
            "kept_hostname": {"type": ["string", "null"]},
            "split_hostname": {"type": ["string", "null"]},
            "split_machine_id": {"type": ["string", "null"]},
        },
    },
    "CloneSuspicions": {
        "type": "object",
        "properties": {"suspicions": {"type": "array", "items": ref("CloneSuspicion")}},
    },
    "DeviceRestored": {
        "type": "object",
        "properties": {"mac": {"type": "string"}, "state": {"enum": ["restored"]}},
    },
}


def coverage_paths() -> dict[str, Any]:
    return {
        "/v1/clients/{client_id}/unmanaged": {
            "get": operation(
                "Devices the client's agents saw in the last 30 days that carry no agent "
                "(viewer and up); dismissed=1 adds the dismissed ones",
                "200",
                "UnmanagedDevices",
                params=[_CLIENT_ID, *query_params(UnmanagedQuery)],
            )
        },
        "/v1/machines/{machine_id}/clones": {
            "get": operation(
                "The machine's clone suspicions, the open one first (viewer and up)",
                "200",
                "CloneSuspicions",
                params=[MACHINE_ID],
            )
        },
        "/v1/machines/{machine_id}/clone/resolve": {
            "post": operation(
                "Keep one copy of a suspected clone; the other gets its own machine record at "
                "its next enrollment (technician, admin); 409 without an open suspicion or "
                "when both copies report one hostname",
                "200",
                "CloneSuspicion",
                body="ResolveCloneRequest",
                params=[MACHINE_ID],
            )
        },
        "/v1/clients/{client_id}/coverage": {
            "get": operation(
                "The client's coverage statement for a month: per machine and required "
                "component the share of heartbeats it ran in, gaps, silences, unmanaged and "
                "dismissed devices, a summary line (viewer and up)",
                "200",
                "CoverageStatement",
                params=[_CLIENT_ID, *query_params(CoverageQuery)],
            )
        },
        "/v1/clients/{client_id}/unmanaged/{mac}/dismiss": {
            "post": operation(
                "Hide a device that needs no agent, audited with who and why (technician, "
                "admin); 409 if dismissed already",
                "200",
                "DismissedDevice",
                body="DismissRequest",
                params=[_CLIENT_ID, _MAC],
            )
        },
        "/v1/clients/{client_id}/unmanaged/{mac}/restore": {
            "post": operation(
                "List a dismissed device again, audited (technician, admin); 409 if it is not "
                "dismissed",
                "200",
                "DeviceRestored",
                body="RestoreRequest",
                params=[_CLIENT_ID, _MAC],
            )
        },
    }
