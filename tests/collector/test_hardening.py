"""Attacks from the red-team review that are not about enrollment, each refused on both stores."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.collector.conftest import Harness, HarnessFactory


@pytest.mark.parametrize(
    "component",
    [
        {"name": "av\u0000", "status": "running"},
        {"name": "av x", "status": "running"},
        {"name": "a" * 65, "status": "running"},
        {"name": "av", "status": "running", "version": "1\u0000"},
    ],
)
async def test_a_component_name_outside_the_agent_config_rule_or_a_nul_is_refused(
    harness: Harness, component: dict[str, str]
) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token, "hw-1")
    resp = await harness.client.post(
        "/v1/heartbeat",
        json={"components": [component]},
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_body"
    await harness.flush()
    machine = await harness.get(f"/v1/machines/{agent['machine_id']}", admin)
    assert machine["components"] == []
    page = await harness.client.get("/", headers=admin)
    assert page.status in (200, 303)


@pytest.mark.parametrize(
    "target",
    [
        "/%09/evil.example/phish",
        "/\t/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/ok\x00",
        "evil.example",
    ],
)
def test_sign_in_never_sends_a_person_to_another_site(target: str) -> None:
    from collector.web.people import safe_next

    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/", "/machines?state=offline", "/machines/abc%20def"])
def test_sign_in_keeps_a_path_on_this_site(target: str) -> None:
    from collector.web.people import safe_next

    assert safe_next(target) == target


def events_body(count: int, *, start: int = 0, detail: object = None) -> dict[str, object]:
    return {
        "events": [
            {
                "event_id": f"e-{n}",
                "at": "2026-03-02T09:00:00Z",
                "type": "component.stopped",
                "detail": detail if detail is not None else {"component": "antivirus"},
            }
            for n in range(start, start + count)
        ]
    }


async def test_an_event_with_a_megabyte_of_detail_is_refused_and_nothing_is_stored(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token, "hw-1")
    auth = {"Authorization": f"Bearer {agent['agent_token']}"}
    resp = await harness.client.post(
        "/v1/events", json=events_body(1, detail={"blob": "x" * 900_000}), headers=auth
    )
    assert resp.status == 413
    assert (await resp.json())["error"] == "event_detail_too_large"
    resp = await harness.client.post(
        "/v1/events", json=events_body(1, detail={"text": "a\u0000b"}), headers=auth
    )
    assert resp.status == 400
    assert await harness.store.list_events(agent["machine_id"], limit=10) == []


async def test_an_agent_sending_more_events_than_its_hourly_quota_is_refused(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(events_per_hour=5)
    _, token = await harness.add_client()
    agent = await harness.enroll(token, "hw-1")
    auth = {"Authorization": f"Bearer {agent['agent_token']}"}
    ok = await harness.client.post("/v1/events", json=events_body(4), headers=auth)
    assert ok.status == 200
    over = await harness.client.post("/v1/events", json=events_body(2, start=4), headers=auth)
    assert over.status == 429
    assert (await over.json())["error"] == "event_quota_exceeded"
    assert len(await harness.store.list_events(agent["machine_id"], limit=10)) == 4
    harness.clock.advance(hours=1, seconds=1)
    later = await harness.client.post("/v1/events", json=events_body(2, start=4), headers=auth)
    assert later.status == 200


async def test_events_older_than_the_retention_horizon_are_dropped(harness: Harness) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token, "hw-1")
    auth = {"Authorization": f"Bearer {agent['agent_token']}"}
    await harness.client.post("/v1/events", json=events_body(3), headers=auth)
    harness.clock.advance(days=2)
    await harness.client.post("/v1/events", json=events_body(1, start=3), headers=auth)
    removed = await harness.store.compact_history(
        horizon_start=harness.clock.now() - timedelta(days=1)
    )
    assert removed.events == 3
    assert [e.event_id for e in await harness.store.list_events(agent["machine_id"], limit=10)] == [
        "e-3"
    ]
