"""The OpenAPI document and the request checks are one source (issue 22): every operation of
the document is walked, and for each of its query parameters and request bodies the requests
the document calls valid are accepted (whatever the state then answers, never a 400 for their
shape), while requests it rules out are refused with a 400.

The examples are generated from the served document alone, the way a client generator or a
fuzzer would read it; the machine, command, client and device they name exist, so lookups pass.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.collector.conftest import Harness
from wire.messages import NO_NUL

# Refusals of well-formed input that no schema can state: they depend on the state or on
# cryptography, not on the request's shape.
SEMANTIC_400 = {
    "bad_signature",  # an approval's signature is checked against the order's bytes
    "unknown_key",  # which operator keys are registered is the collector's state
    "invalid_key",  # a key line is read as an Ed25519 key whose id is derived from it
    "as_of_in_future",  # "not in the future" depends on the clock
}

PAST_INSTANTS = (
    "2026-03-01T08:00:00Z",
    "2026-03-01T09:30:00.123456+01:00",
    "2026-02-28t23:00:00z",
)


class Document:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def valid(self, schema: dict[str, Any]) -> list[Any]:
        """JSON values the schema accepts: its bounds, each enum member, each alternative."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            return [v for alt in schema["anyOf"] for v in self.valid(alt)]
        if "enum" in schema:
            return list(schema["enum"])
        if "examples" in schema:
            return list(schema["examples"])
        kind = schema.get("type")
        if kind == "null":
            return [None]
        if kind == "boolean":
            return [True, False]
        if kind == "integer":
            low = schema.get("minimum", 0)
            high = schema.get("maximum", low + 1000)
            return sorted({low, high, (low + high) // 2})
        if kind == "string":
            if schema.get("format") == "date-time":
                return list(PAST_INSTANTS)
            assert schema.get("pattern", NO_NUL) == NO_NUL, f"no examples for {schema}"
            low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
            texts = {"x" * low, "x" * high, ("Front desk ü " * high)[: max(low, high // 2)]}
            texts.add(" " * max(low, 1))  # blank, but the schema does not refuse it
            return sorted(texts)
        if kind == "array":
            (item, *_) = self.valid(schema["items"])
            return [[item] * max(schema.get("minItems", 0), n) for n in (0, 1, 2)]
        if kind == "object":
            return self.objects(schema)
        raise AssertionError(f"no examples for {schema}")

    def objects(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        properties = schema.get("properties", {})
        first = {name: self.valid(s)[0] for name, s in properties.items()}
        required = {name: first[name] for name in schema.get("required", [])}
        found = [required, first]
        for name, field in properties.items():
            for value in self.valid(field)[1:]:
                found.append({**required, name: value})
        return found

    def invalid(self, schema: dict[str, Any]) -> list[tuple[str, Any]]:
        """(why, value) pairs the schema refuses."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            # The optional fields: one kind of value, or null.
            (value_schema,) = [a for a in schema["anyOf"] if self.resolve(a) != NULL]
            nullable = len(schema["anyOf"]) == 2
            return [
                (why, v) for why, v in self.invalid(value_schema) if not nullable or why != "null"
            ]
        if "enum" in schema:
            return [("not a member", "no-such-value"), ("null", None)]
        kind = schema.get("type")
        found: list[tuple[str, Any]] = [("null", None)] if kind != "null" else []
        if kind == "integer":
            found.append(("text", "ten"))
            if "minimum" in schema:
                found.append(("below the minimum", schema["minimum"] - 1))
            if "maximum" in schema:
                found.append(("above the maximum", schema["maximum"] + 1))
        if kind == "string":
            found.append(("a number", 12345))
            if schema.get("minLength", 0) > 0:
                found.append(("too short", ""))
            if "maxLength" in schema:
                found.append(("too long", "x" * (schema["maxLength"] + 1)))
            if "pattern" in schema:
                found.append(("a NUL character", "front\x00desk"))
                found += off_pattern(schema["pattern"])
            if schema.get("format") == "date-time":
                found += [("no offset", "2026-03-01T08:00:00"), ("not a time", "yesterday")]
        if kind == "array":
            found.append(("an object", {}))
            if schema.get("minItems", 0) > 0:
                found.append(("too few items", []))
            if "maxItems" in schema:
                (item, *_) = self.valid(schema["items"])
                found.append(("too many items", [item] * (schema["maxItems"] + 1)))
        if kind == "object":
            found.append(("a list", []))
        return found

    def invalid_bodies(self, schema: dict[str, Any]) -> list[tuple[str, Any]]:
        schema = self.resolve(schema)
        (minimal, *_) = self.objects(schema)
        found: list[tuple[str, Any]] = [
            ("not an object", []),
            ("unknown field", {**minimal, "colour": "blue"}),
        ]
        assert schema.get("additionalProperties") is False
        for name in schema.get("required", []):
            found.append((f"{name} missing", {k: v for k, v in minimal.items() if k != name}))
        for name, field in schema.get("properties", {}).items():
            for why, value in self.invalid(field):
                found.append((f"{name}: {why}", {**minimal, name: value}))
        return found


NULL = {"type": "null"}


def off_pattern(pattern: str) -> list[tuple[str, str]]:
    """Texts without NUL that `pattern` refuses (a blank reason, a month in words)."""
    return [("not the pattern", t) for t in ("   ", "April") if not re.search(pattern, t)]


def query_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def query_invalid(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """Query texts the parameter's schema refuses (a query string is text: null, numbers and
    lists are not things it can carry)."""
    found: list[tuple[str, str]] = []
    if "enum" in schema:
        found.append(("not a member", "no-such-value"))
    if schema.get("type") == "integer":
        found += [("not a whole number", "ten"), ("a fraction", "1.5")]
        found += [("below the minimum", str(schema["minimum"] - 1))]
        found += [("above the maximum", str(schema["maximum"] + 1))]
    if schema.get("type") == "string":
        found.append(("a NUL character", "front\x00desk"))
        if schema.get("format") == "date-time":
            found += [("no offset", "2026-03-01T08:00:00"), ("not a time", "yesterday")]
        found += off_pattern(schema.get("pattern", NO_NUL))
    assert found, f"no invalid examples for {schema}"
    return found


async def _world(harness: Harness) -> tuple[dict[str, str], dict[str, str]]:
    """An admin's headers and the path parameters of things that exist."""
    admin = await harness.api_token("admin", name="ada")
    client_id, token = await harness.add_client()
    agent = await harness.enroll(token, "hw-1", hostname="front-desk")
    await harness.heartbeat(
        agent["agent_token"],
        offboard_approvals=2,  # so its offboard waits for two operators' signatures
        network={
            "macs": ["52:54:00:00:00:01"],
            "addresses": ["192.168.1.10"],
            "neighbors": [{"ip": "192.168.1.50", "mac": "52:54:00:aa:bb:cc"}],
        },
    )
    await harness.flush()
    resp = await harness.client.post(
        f"/v1/machines/{agent['machine_id']}/offboard", json={"reason": "seed"}, headers=admin
    )
    assert resp.status == 202, await resp.text()
    command_id = (await resp.json())["command_id"]
    other_client, other_token = await harness.add_client("Beta Bakery")
    await harness.enroll(other_token, "hw-2", hostname="till")
    resp = await harness.client.post(
        f"/v1/clients/{other_client}/offboard", json={"reason": "contract ended"}, headers=admin
    )
    assert resp.status == 202, await resp.text()
    ids = {
        "machine_id": agent["machine_id"],
        "command_id": command_id,
        "client_id": client_id,
        "mac": "52:54:00:aa:bb:cc",
        "batch_id": (await resp.json())["batch_id"],
    }
    return admin, ids


def people_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if op["security"] == [{"apiToken": []}]
    ]


async def _send(
    harness: Harness,
    method: str,
    path: str,
    headers: dict[str, str],
    query: str = "",
    body: Any = None,
) -> tuple[int, dict[str, Any]]:
    url = path + (f"?{query}" if query else "")
    if body is None and method == "post":
        resp = await harness.client.post(url, headers=headers)
    else:
        resp = await harness.client.request(method.upper(), url, headers=headers, json=body)
    text = await resp.text()
    assert resp.status < 500, (method, url, body, text)
    answer = await resp.json() if resp.content_type == "application/json" and text else {}
    return resp.status, answer


def _shape_refusal(status: int, answer: dict[str, Any]) -> bool:
    return status == 400 and answer.get("error") not in SEMANTIC_400


async def test_every_query_parameter_takes_what_the_document_says_and_nothing_else(
    fleet: Harness,
) -> None:
    spec = await fleet.get("/v1/openapi.json", {})
    doc = Document(spec)
    admin, ids = await _world(fleet)
    checked = 0
    for method, template, op in people_operations(spec):
        path = template.format(**ids) if "{" in template else template
        params = [p for p in op.get("parameters", []) if p["in"] == "query"]
        status, answer = await _send(fleet, method, path, admin, "colour=blue")
        assert (status, answer.get("error")) == (400, "unknown_parameter"), (template, answer)
        for param in params:
            name, schema = param["name"], param["schema"]
            for value in doc.valid(schema):
                text = f"{name}={quote(query_text(value))}"
                status, answer = await _send(fleet, method, path, admin, text)
                assert not _shape_refusal(status, answer), (template, text, answer)
                checked += 1
            for why, value in query_invalid(schema):
                text = f"{name}={quote(value)}"
                status, answer = await _send(fleet, method, path, admin, text)
                assert status == 400, (template, text, why, status, answer)
                assert answer["error"] in (f"invalid_{name}", "invalid_parameter"), answer
                checked += 1
    assert checked > 100


async def test_every_request_body_takes_what_the_document_says_and_nothing_else(
    fleet: Harness,
) -> None:
    spec = await fleet.get("/v1/openapi.json", {})
    doc = Document(spec)
    admin, ids = await _world(fleet)
    bodies = 0
    for method, template, op in people_operations(spec):
        if "requestBody" not in op:
            continue
        bodies += 1
        path = template.format(**ids)
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        # Refusals first: they change nothing, so the valid requests after them meet the
        # state the world was built with.
        for why, body in doc.invalid_bodies(schema):
            status, answer = await _send(fleet, method, path, admin, body=body)
            assert status == 400, (template, why, body, status, answer)
            assert answer["error"] == "invalid_body", (template, why, answer)
        for body in doc.objects(doc.resolve(schema)):
            status, answer = await _send(fleet, method, path, admin, body=body)
            assert not _shape_refusal(status, answer), (template, body, answer)
    assert bodies >= 9


@pytest.mark.parametrize("ticket", [None, "T-1042"])
async def test_an_offboard_ticket_may_be_null_as_the_document_says(
    fleet: Harness, ticket: str | None
) -> None:
    """DESIGN has `"ticket"?`: clients that send null for "no ticket" keep working, and the
    document says so."""
    spec = await fleet.get("/v1/openapi.json", {})
    schema = spec["components"]["schemas"]["OffboardRequest"]
    assert schema["required"] == ["reason"]
    assert NULL in schema["properties"]["ticket"]["anyOf"]
    admin = await fleet.api_token("admin", name="ada")
    _, token = await fleet.add_client()
    agent = await fleet.enroll(token, "hw-1")
    resp = await fleet.client.post(
        f"/v1/machines/{agent['machine_id']}/offboard",
        json={"reason": "laptop returned", "ticket": ticket},
        headers=admin,
    )
    assert resp.status == 202, await resp.text()
    command = await fleet.get(f"/v1/commands/{(await resp.json())['command_id']}", admin)
    assert command["ticket"] == ticket


async def test_the_states_answered_are_the_states_the_document_lists(fleet: Harness) -> None:
    spec = await fleet.get("/v1/openapi.json", {})
    schemas = spec["components"]["schemas"]
    admin, ids = await _world(fleet)
    machine = await fleet.get(f"/v1/machines/{ids['machine_id']}", admin)
    command = await fleet.get(f"/v1/commands/{ids['command_id']}", admin)
    assert machine["state"] == command["state"] == "awaiting_approval"
    assert machine["state"] in schemas["Machine"]["properties"]["state"]["enum"]
    assert command["state"] in schemas["Command"]["properties"]["state"]["enum"]
    assert command["state"] in schemas["CommandAccepted"]["properties"]["state"]["enum"]
