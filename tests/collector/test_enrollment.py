"""Enrollment: a machine is (client, hardware id); re-enrolling keeps it and revokes old tokens."""

from __future__ import annotations

import pytest

from collector.store.base import AuditFilter
from tests.collector.conftest import Harness


async def test_enrollment_creates_a_machine_first_seen_now(harness: Harness) -> None:
    client_id, token = await harness.add_client()
    admin = await harness.api_token("admin")
    enrolled = await harness.enroll(token, "hw-1", hostname="reception-pc", kind="pc")
    assert set(enrolled) == {"agent_id", "agent_token", "machine_id", "heartbeat_interval_s"}
    machine = await harness.get(f"/v1/machines/{enrolled['machine_id']}", admin)
    assert machine["client_id"] == client_id
    assert machine["hostname"] == "reception-pc"
    assert machine["first_seen"] == machine["last_seen"] == "2026-03-02T09:00:00Z"
    assert machine["state"] == "online"


async def test_reenrolling_the_same_hardware_keeps_the_machine_and_revokes_old_tokens(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    first = await harness.enroll(token, "hw-1")
    harness.clock.advance(days=3)
    second = await harness.enroll(
        token, "hw-1", hostname="reimaged", previous_agent_token=first["agent_token"]
    )
    assert second["machine_id"] == first["machine_id"]
    assert second["agent_token"] != first["agent_token"]
    machine = await harness.get(f"/v1/machines/{first['machine_id']}", admin)
    assert machine["first_seen"] == "2026-03-02T09:00:00Z"
    assert machine["hostname"] == "reimaged"
    old = await harness.client.post(
        "/v1/heartbeat",
        json={"components": []},
        headers={"Authorization": f"Bearer {first['agent_token']}"},
    )
    assert old.status == 401
    await harness.heartbeat(second["agent_token"])


async def test_same_hardware_at_another_client_with_its_credential_is_a_move(
    harness: Harness,
) -> None:
    _, acme = await harness.add_client("Acme")
    _, globex = await harness.add_client("Globex")
    a = await harness.enroll(acme, "hw-shared")
    b = await harness.enroll(globex, "hw-shared", previous_agent_token=a["agent_token"])
    assert a["machine_id"] != b["machine_id"]


async def test_enrollment_is_audited_with_the_agent_as_actor(harness: Harness) -> None:
    _, token = await harness.add_client()
    enrolled = await harness.enroll(token, "hw-1")
    entries = await harness.store.list_audit(AuditFilter(action="machine.enrolled"))
    assert [(e.actor, e.target) for _, e in entries] == [
        (enrolled["agent_id"], enrolled["machine_id"])
    ]


async def test_expired_enrollment_token_is_refused(harness: Harness) -> None:
    _, token = await harness.add_client(ttl_days=30)
    harness.clock.advance(days=30)
    resp = await harness.client.post(
        "/v1/enroll",
        json={
            "enrollment_token": token,
            "hardware_id": "hw",
            "hostname": "h",
            "os": "x",
            "kind": "pc",
        },
    )
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_enrollment_token"


async def test_revoked_enrollment_token_is_refused(harness: Harness) -> None:
    client_id, token = await harness.add_client()
    await harness.store.revoke_enrollment_tokens(
        client_id, token_id=None, now=harness.clock.now(), actor="test"
    )
    resp = await harness.client.post(
        "/v1/enroll",
        json={
            "enrollment_token": token,
            "hardware_id": "hw",
            "hostname": "h",
            "os": "x",
            "kind": "pc",
        },
    )
    assert resp.status == 401


async def test_unknown_fields_are_ignored_on_enrollment(harness: Harness) -> None:
    _, token = await harness.add_client()
    enrolled = await harness.enroll(token, "hw-1", future_field={"x": 1})
    assert enrolled["machine_id"]


GOOD = {"hardware_id": "hw", "hostname": "h", "os": "Linux", "kind": "pc"}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[]", 400, "invalid_body"),
        (b'{"hardware_id": "hw", "hostname": "h", "os": "x", "kind": "pc"}', 400, "invalid_body"),
        (
            b'{"enrollment_token": "T", "hardware_id": 7, "hostname": "h", "os": "x", '
            b'"kind": "pc"}',
            400,
            "invalid_body",
        ),
        (
            b'{"enrollment_token": "T", "hardware_id": "hw", "hostname": "h", "os": "x", '
            b'"kind": "laptop"}',
            400,
            "invalid_body",
        ),
        (
            b'{"enrollment_token": "T", "hardware_id": "", "hostname": "h", "os": "x", '
            b'"kind": "pc"}',
            400,
            "invalid_body",
        ),
        (
            b'{"enrollment_token": "T", "hardware_id": "hw", "hostname": "h\\u0000", '
            b'"os": "x", "kind": "pc"}',
            400,
            "invalid_body",
        ),
    ],
    ids=[
        "malformed",
        "empty",
        "not-an-object",
        "missing-token",
        "wrong-type",
        "unknown-kind",
        "empty-hardware-id",
        "nul-in-hostname",
    ],
)
async def test_bad_enrollment_requests_get_a_clear_error_and_change_nothing(
    harness: Harness, body: bytes, status: int, error: str
) -> None:
    _, token = await harness.add_client()
    resp = await harness.client.post(
        "/v1/enroll",
        data=body.replace(b'"T"', f'"{token}"'.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == status
    payload = await resp.json()
    assert payload["error"] == error and payload["detail"]
    assert await harness.store.list_audit(AuditFilter(action="machine.enrolled")) == []


async def test_oversize_body_is_413_and_changes_nothing(harness: Harness) -> None:
    _, token = await harness.add_client()
    body = {"enrollment_token": token, **GOOD, "padding": "x" * (1024 * 1024)}
    resp = await harness.client.post("/v1/enroll", json=body)
    assert resp.status == 413
    assert (await resp.json())["error"] == "body_too_large"
    assert await harness.store.list_audit(AuditFilter(action="machine.enrolled")) == []


async def test_guessing_enrollment_tokens_is_rate_limited_but_valid_enrollment_is_not(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    statuses = []
    for i in range(35):
        resp = await harness.client.post(
            "/v1/enroll", json={"enrollment_token": f"guess-{i}", **GOOD}
        )
        statuses.append(resp.status)
    assert statuses[:30] == [401] * 30
    assert set(statuses[30:]) == {429}
    assert (await harness.enroll(token, "hw-ok"))["machine_id"]
