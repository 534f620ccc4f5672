"""`GET /v1/inventory?as_of=T`: every machine enrolled before T, each field as it stood at T."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.collector.conftest import Harness


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def inventory(harness: Harness, headers: dict[str, str], as_of: str) -> dict[str, Any]:
    return await harness.get(f"/v1/inventory?as_of={as_of}", headers)  # type: ignore[no-any-return]


async def test_inventory_shows_facts_and_last_seen_as_they_stood_at_as_of(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    billing = await harness.api_token("billing")
    harness.clock.set(at("2026-03-07T10:00"))
    agent = await harness.enroll(token, hostname="pc-old", kind="pc")
    harness.clock.set(at("2026-03-20T10:00"))
    await harness.heartbeat(
        agent["agent_token"],
        hostname="pc-old",
        components=[{"name": "antivirus", "status": "running"}],
    )
    await harness.flush()
    harness.clock.set(at("2026-04-10T10:00"))
    await harness.heartbeat(
        agent["agent_token"],
        hostname="srv-new",
        kind="server",
        components=[{"name": "antivirus", "status": "stopped"}],
    )
    await harness.flush()

    april = await inventory(harness, billing, "2026-04-01T00:00:00Z")
    (row,) = april["machines"]
    assert row["hostname"] == "pc-old" and row["kind"] == "pc"
    assert row["first_seen"] == "2026-03-07T10:00:00Z"
    assert row["last_seen"] == "2026-03-20T10:00:00Z"
    assert row["offboarded_at"] is None
    assert row["components"] == [
        {"name": "antivirus", "status": "running", "version": None, "required": True}
    ]
    assert april["as_of"] == "2026-04-01T00:00:00Z"

    now = await inventory(harness, billing, "2026-04-10T10:00:00Z")
    assert now["machines"][0]["hostname"] == "srv-new"
    assert now["machines"][0]["kind"] == "pc"  # reported, not yet confirmed by an admin
    assert now["machines"][0]["last_seen"] == "2026-04-10T10:00:00Z"

    harness.clock.set(at("2026-04-11T09:00"))
    admin = await harness.api_token("admin")
    resp = await harness.client.post(
        f"/v1/machines/{agent['machine_id']}/kind", json={"kind": "server"}, headers=admin
    )
    assert resp.status == 200, await resp.text()
    harness.clock.set(at("2026-04-12T09:00"))
    confirmed = await inventory(harness, billing, "2026-04-12T00:00:00Z")
    assert confirmed["machines"][0]["kind"] == "server"
    before = await inventory(harness, billing, "2026-04-11T08:00:00Z")
    assert before["machines"][0]["kind"] == "pc"


async def test_a_machine_enrolled_exactly_at_as_of_is_not_yet_in_the_inventory(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    billing = await harness.api_token("billing")
    harness.clock.set(at("2026-04-01T00:00"))
    await harness.enroll(token)
    harness.clock.set(at("2026-04-02T00:00"))
    assert (await inventory(harness, billing, "2026-04-01T00:00:00Z"))["machines"] == []
    later = await inventory(harness, billing, "2026-04-01T00:00:00.000001Z")
    assert len(later["machines"]) == 1


async def test_as_of_with_an_offset_is_the_same_instant(harness: Harness) -> None:
    _, token = await harness.add_client()
    billing = await harness.api_token("billing")
    harness.clock.set(at("2026-03-31T20:00"))
    await harness.enroll(token)
    harness.clock.set(at("2026-04-02T00:00"))
    body = await inventory(harness, billing, "2026-04-01T00:00:00%2B02:00")
    assert body["as_of"] == "2026-03-31T22:00:00Z"
    assert len(body["machines"]) == 1


@pytest.mark.parametrize(
    ("as_of", "error"),
    [
        ("2026-13-01T00:00:00Z", "invalid_as_of"),
        ("next-month", "invalid_as_of"),
        ("2026-04-01T00:00:00", "invalid_as_of"),
        ("2030-01-01T00:00:00Z", "as_of_in_future"),
    ],
    ids=["bad-month", "words", "no-offset", "future"],
)
async def test_unusable_as_of_is_400(harness: Harness, as_of: str, error: str) -> None:
    billing = await harness.api_token("billing")
    body = await harness.get(f"/v1/inventory?as_of={as_of}", billing, status=400)
    assert body["error"] == error


async def test_a_machine_back_after_a_long_gap_has_its_history_split_into_runs(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    billing = await harness.api_token("billing")
    harness.clock.set(at("2026-01-05T09:00"))
    agent = await harness.enroll(token)
    for minute in (1, 2, 3):
        harness.clock.set(at(f"2026-01-05T09:0{minute}"))
        await harness.heartbeat(agent["agent_token"])
        await harness.flush()
    harness.clock.set(at("2026-02-20T08:00"))  # dark for 46 days, then back
    await harness.heartbeat(agent["agent_token"])
    await harness.flush()
    harness.clock.set(at("2026-03-15T00:00"))

    jan = (await inventory(harness, billing, "2026-02-01T00:00:00Z"))["machines"][0]
    assert jan["last_seen"] == "2026-01-05T09:03:00Z"
    feb = (await inventory(harness, billing, "2026-02-20T07:00:00Z"))["machines"][0]
    assert feb["last_seen"] == "2026-01-05T09:03:00Z"
    mar = (await inventory(harness, billing, "2026-03-01T00:00:00Z"))["machines"][0]
    assert mar["last_seen"] == "2026-02-20T08:00:00Z"


async def test_inventory_streams_large_fleets_in_batches(harness: Harness) -> None:
    _, token = await harness.add_client()
    billing = await harness.api_token("billing")
    for i in range(30):
        await harness.enroll(token, f"hw-{i:03}")
    harness.clock.advance(seconds=1)
    seen = []
    async for batch in harness.store.iter_inventory(harness.clock.now(), batch_size=7):
        assert len(batch) <= 7
        seen += [r.machine_id for r in batch]
    assert len(seen) == len(set(seen)) == 30
    body = await inventory(harness, billing, harness.clock.now().isoformat())
    assert sorted(m["machine_id"] for m in body["machines"]) == sorted(seen)
