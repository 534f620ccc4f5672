"""Attacks from the red-team review that are not about enrollment, each refused on both stores."""

from __future__ import annotations

import pytest

from tests.collector.conftest import Harness


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
