"""The OpenAPI 3 description of every endpoint; a test keeps it in step with the routes."""

from __future__ import annotations

from typing import Any

import msgspec

from collector import __version__
from collector.openapi_coverage import COVERAGE_SCHEMAS, coverage_paths
from collector.openapi_schemas import (
    COMMAND_ID,
    EXTRA_SCHEMAS,
    MACHINE_ID,
    operation,
    path_param,
    query_params,
)
from collector.requests import (
    PEOPLE_BODIES,
    AuditQuery,
    CommandsQuery,
    EventsQuery,
    HeldQuery,
    InventoryQuery,
    MachinesQuery,
)
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


def build_spec() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _STRUCTS, ref_template="#/components/schemas/{name}"
    )
    schemas = {**components, **EXTRA_SCHEMAS, **COVERAGE_SCHEMAS}
    paths: dict[str, Any] = {
        "/v1/enroll": {
            "post": operation(
                "Enroll a machine with a client's enrollment token",
                "201",
                "EnrollResponse",
                body="EnrollRequest",
                security=None,
            )
        },
        "/v1/heartbeat": {
            "post": operation(
                "Report presence and component status; receive commands",
                "200",
                "HeartbeatResponse",
                body="HeartbeatRequest",
                security="agentToken",
            )
        },
        "/v1/events": {
            "post": operation(
                "Deliver spooled agent events (idempotent on event_id)",
                "200",
                "EventsResponse",
                body="EventsRequest",
                security="agentToken",
            )
        },
        "/v1/machines": {
            "get": operation(
                "List machines (viewer and up)",
                "200",
                "MachineList",
                params=query_params(MachinesQuery),
            )
        },
        "/v1/machines/{machine_id}": {
            "get": operation("One machine", "200", "Machine", params=[MACHINE_ID])
        },
        "/v1/machines/{machine_id}/events": {
            "get": operation(
                "Events the machine's agent reported, newest first",
                "200",
                "MachineEvents",
                params=[MACHINE_ID, *query_params(EventsQuery)],
            )
        },
        "/v1/inventory": {
            "get": operation(
                "Every machine enrolled before as_of, each field as it stood then (billing, admin)",
                "200",
                "Inventory",
                params=query_params(InventoryQuery),
            )
        },
        "/v1/audit": {
            "get": operation(
                "The audit log, newest first (admin)",
                "200",
                "AuditLog",
                params=query_params(AuditQuery),
            )
        },
        "/v1/machines/{machine_id}/offboard": {
            "post": operation(
                "Request an offboard (technician, admin); a pending one is answered again",
                "202",
                "CommandAccepted",
                body="OffboardRequest",
                params=[MACHINE_ID],
            )
        },
        "/v1/commands": {
            "get": operation(
                "List commands (viewer and up)",
                "200",
                "CommandList",
                params=query_params(CommandsQuery),
            )
        },
        "/v1/commands/{command_id}": {
            "get": operation("Follow one command", "200", "Command", params=[COMMAND_ID])
        },
        "/v1/commands/{command_id}/result": {
            "post": operation(
                "An agent reports a command's outcome (only the owning agent)",
                "200",
                "CommandResultResponse",
                body="CommandResultRequest",
                security="agentToken",
                params=[COMMAND_ID],
            )
        },
        "/v1/machines/{machine_id}/kind": {
            "post": operation(
                "Confirm or set a machine's billed kind (admin); billed so from now on",
                "200",
                "Machine",
                body="KindRequest",
                params=[MACHINE_ID],
            )
        },
        "/v1/machines/{machine_id}/approve-reenroll": {
            "post": operation(
                "Let known hardware enroll again without its credential, within 24 hours "
                "(technician, admin)",
                "200",
                "ReenrollApproval",
                params=[MACHINE_ID],
            )
        },
        "/v1/enrollments/held": {
            "get": operation(
                "Enrollments of known hardware held until a technician approves them",
                "200",
                "HeldEnrollments",
                params=query_params(HeldQuery),
            )
        },
        "/v1/commands/{command_id}/approvals": {
            "post": operation(
                "An operator's signature over the command's order (technician, admin); made "
                "locally with `rmm-collector remote approve`",
                "200",
                "Command",
                body="ApprovalRequest",
                params=[COMMAND_ID],
            )
        },
        "/v1/approvals": {
            "post": operation(
                "Many approvals at once (a bulk offboard), each kept or refused on its own",
                "200",
                None,
                body="BatchApprovalRequest",
            )
        },
        "/v1/clients": {"get": operation("The clients by name", "200", None)},
        "/v1/clients/{client_id}/offboard": {
            "post": operation(
                "One order per live machine of the client, approved as one batch",
                "202",
                None,
                body="BulkOffboardRequest",
                params=[path_param("client_id", "the client's id")],
                ok_text="Accepted",
            )
        },
        "/v1/batches/{batch_id}": {
            "get": operation(
                "The orders of a bulk offboard",
                "200",
                None,
                params=[path_param("batch_id", "from POST /v1/clients/{client_id}/offboard")],
            )
        },
        "/v1/operators": {
            "get": operation("Registered operators (display only)", "200", None),
            "post": operation(
                "Register an operator's public key by name (admin)",
                "201",
                None,
                body="OperatorRequest",
                ok_text="Created",
            ),
        },
        "/v1/commands/{command_id}/progress": {
            "post": operation(
                "An agent reports the steps so far of a command it runs (only the owning agent)",
                "200",
                "CommandResultResponse",
                body="CommandProgressRequest",
                security="agentToken",
                params=[COMMAND_ID],
            )
        },
        "/v1/reports/exposure": {
            "get": operation(
                "Licence exposure: expired without offboarding, offboards pending over 7 days",
                "200",
                "ExposureReport",
            )
        },
        "/healthz": {
            "get": operation(
                "Health: the database answers and took a write recently (else 503)",
                "200",
                None,
                security=None,
            )
        },
        "/metrics": {
            "get": operation("Prometheus metrics (text format)", "200", None, security=None)
        },
        "/v1/openapi.json": {"get": operation("This document", "200", None, security=None)},
        **coverage_paths(),
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
