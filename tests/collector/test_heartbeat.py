"""Heartbeats: the machine is the token's; last-seen is the collector's clock, batched."""

from __future__ import annotations

import pytest

from collector.appkeys import BUFFER
from collector.handlers_agent import next_heartbeat_s
from tests.collector.conftest import Harness


async def test_heartbeat_moves_last_seen_to_the_collectors_clock_after_a_flush(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token)
    harness.clock.advance(minutes=5)
    await harness.heartbeat(agent["agent_token"])
    assert await harness.flush() == 1
    machine = await harness.get(f"/v1/machines/{agent['machine_id']}", admin)
    assert machine["last_seen"] == "2026-03-02T09:05:00Z"
    assert machine["components"] == [
        {"name": "rmm", "status": "running", "version": "0.1.0", "required": True}
    ]


async def test_heartbeat_updates_changed_facts_and_keeps_absent_ones(harness: Harness) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token, hostname="old-name", kind="pc")
    await harness.heartbeat(agent["agent_token"], hostname="new-name", kind="server")
    await harness.flush()
    machine = await harness.get(f"/v1/machines/{agent['machine_id']}", admin)
    assert (machine["hostname"], machine["os"]) == ("new-name", "Linux 6.1")
    # A client's machine cannot re-price itself: the reported kind waits for an admin.
    assert (machine["kind"], machine["pending_kind"]) == ("pc", "server")
    # The inventory bills the confirmed kind and says what waits (for the change report).
    harness.clock.advance(minutes=1)
    inventory = await harness.get(f"/v1/inventory?as_of={harness.clock.now().isoformat()}", admin)
    (row,) = inventory["machines"]
    assert (row["kind"], row["pending_kind"]) == ("pc", "server")


async def test_the_machine_is_the_tokens_never_the_bodys(harness: Harness) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    mine = await harness.enroll(token, "hw-mine")
    other = await harness.enroll(token, "hw-other")
    harness.clock.advance(minutes=10)
    await harness.heartbeat(mine["agent_token"], machine_id=other["machine_id"], hostname="spoofed")
    await harness.flush()
    other_machine = await harness.get(f"/v1/machines/{other['machine_id']}", admin)
    assert other_machine["last_seen"] == "2026-03-02T09:00:00Z"
    assert other_machine["hostname"] == "host-hw-other"


async def test_next_heartbeat_carries_a_stable_per_agent_jitter_within_ten_percent() -> None:
    values = {next_heartbeat_s(60, f"agent-{i}") for i in range(200)}
    assert min(values) >= 54 and max(values) <= 66
    assert len(values) > 5
    assert next_heartbeat_s(60, "agent-7") == next_heartbeat_s(60, "agent-7")


async def test_heartbeat_commands_are_empty_until_something_is_requested(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    reply = await harness.heartbeat(agent["agent_token"])
    assert reply["commands"] == []
    assert 54 <= reply["next_heartbeat_s"] <= 66


async def test_unknown_heartbeat_fields_are_ignored(harness: Harness) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    await harness.heartbeat(
        agent["agent_token"],
        cpu_temperature=61,
        components=[
            {"name": "antivirus", "status": "stopped", "version": None, "required": True, "pid": 4}
        ],
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", "invalid_json"),
        (b"{}", "invalid_body"),
        (b'{"components": "none"}', "invalid_body"),
        (b'{"components": [{"name": "antivirus", "status": "sleeping"}]}', "invalid_body"),
        (b'{"components": [], "kind": "tablet"}', "invalid_body"),
        (
            b'{"components": [{"name": "antivirus", "status": "running", "required": "yes"}]}',
            "invalid_body",
        ),
        # PostgreSQL text holds no NUL: refused here, it never reaches (and stalls) the flush
        (b'{"components": [], "hostname": "pc\\u0000"}', "invalid_body"),
        (b'{"components": [], "os": "Linux\\u0000"}', "invalid_body"),
    ],
    ids=[
        "malformed",
        "missing-components",
        "wrong-type",
        "unknown-status",
        "unknown-kind",
        "required-not-bool",
        "nul-in-hostname",
        "nul-in-os",
    ],
)
async def test_bad_heartbeats_are_400_and_change_nothing(
    harness: Harness, body: bytes, error: str
) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    resp = await harness.client.post(
        "/v1/heartbeat",
        data=body,
        headers={
            "Authorization": f"Bearer {agent['agent_token']}",
            "Content-Type": "application/json",
        },
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == error
    assert len(harness.app[BUFFER]) == 0


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "missing_token"),
        ({"Authorization": "Bearer nope"}, 401, "invalid_token"),
        ({"Authorization": "Basic abc"}, 401, "missing_token"),
    ],
)
async def test_heartbeat_without_a_valid_agent_token_is_refused(
    harness: Harness, headers: dict[str, str], status: int, error: str
) -> None:
    resp = await harness.client.post("/v1/heartbeat", json={"components": []}, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"] == error


@pytest.mark.parametrize("written", ["bearer {}", "BEARER {}", "Bearer   {}  "])
async def test_a_token_written_unusually_still_authenticates_the_agent(
    harness: Harness, written: str
) -> None:
    """Whether or not the token is cached yet: the cached fast path only takes plain
    'Bearer <token>' and leaves everything else to the full check."""
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    for _ in range(2):
        resp = await harness.client.post(
            "/v1/heartbeat",
            json={"components": []},
            headers={"Authorization": written.format(agent["agent_token"])},
        )
        assert resp.status == 200, await resp.text()


async def test_an_api_token_cannot_send_heartbeats(harness: Harness) -> None:
    admin = await harness.api_token("admin")
    resp = await harness.client.post("/v1/heartbeat", json={"components": []}, headers=admin)
    assert resp.status == 403


async def test_events_are_stored_once_per_event_id(harness: Harness) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token)
    auth = {"Authorization": f"Bearer {agent['agent_token']}"}
    events = {
        "events": [
            {
                "event_id": "e1",
                "at": "2026-03-02T08:59:00+01:00",
                "type": "component.changed",
                "detail": {"name": "antivirus", "from": "running", "to": "stopped"},
            },
            {"event_id": "e2", "at": "2026-03-02T08:59:30Z", "type": "agent.started", "detail": {}},
        ]
    }
    first = await harness.client.post("/v1/events", json=events, headers=auth)
    assert (await first.json()) == {"accepted": 2}
    again = await harness.client.post("/v1/events", json=events, headers=auth)
    assert (await again.json()) == {"accepted": 0}
    listed = await harness.get(f"/v1/machines/{agent['machine_id']}/events", admin)
    assert [e["event_id"] for e in listed["events"]] == ["e2", "e1"]
    assert listed["events"][1]["at"] == "2026-03-02T07:59:00Z"


async def test_events_with_a_bad_instant_are_refused_whole(harness: Harness) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token)
    auth = {"Authorization": f"Bearer {agent['agent_token']}"}
    resp = await harness.client.post(
        "/v1/events",
        headers=auth,
        json={
            "events": [
                {"event_id": "ok", "at": "2026-03-02T08:00:00Z", "type": "x"},
                {"event_id": "bad", "at": "yesterday", "type": "x"},
            ]
        },
    )
    assert resp.status == 400
    listed = await harness.get(f"/v1/machines/{agent['machine_id']}/events", admin)
    assert listed["events"] == []
