"""People's endpoints: roles, filters, paging, clock-derived state, refusals."""

from __future__ import annotations

import pytest

from tests.collector.conftest import Harness


async def test_state_is_online_then_offline_then_expired_by_the_collectors_clock(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    viewer = await harness.api_token("viewer")
    agent = await harness.enroll(token)
    path = f"/v1/machines/{agent['machine_id']}"
    harness.clock.advance(minutes=3)  # three 60 s intervals: still online
    assert (await harness.get(path, viewer))["state"] == "online"
    harness.clock.advance(seconds=1)
    assert (await harness.get(path, viewer))["state"] == "offline"
    harness.clock.advance(hours=720, minutes=-3, seconds=-2)
    assert (await harness.get(path, viewer))["state"] == "offline"
    harness.clock.advance(seconds=1)  # exactly 720 hours after the last heartbeat
    assert (await harness.get(path, viewer))["state"] == "expired"


async def test_machines_filter_by_client_state_kind_and_hostname(harness: Harness) -> None:
    acme_id, acme = await harness.add_client("Acme")
    _, globex = await harness.add_client("Globex")
    viewer = await harness.api_token("viewer")
    await harness.enroll(acme, "a1", hostname="ACME-FRONTDESK", kind="pc")
    harness.clock.advance(hours=1)
    await harness.enroll(acme, "a2", hostname="acme-fileserver", kind="server")
    await harness.enroll(globex, "g1", hostname="globex-pc", kind="pc")

    def names(payload: dict[str, list[dict[str, str]]]) -> list[str]:
        return sorted(m["hostname"] for m in payload["machines"])

    assert names(await harness.get(f"/v1/machines?client={acme_id}", viewer)) == [
        "ACME-FRONTDESK",
        "acme-fileserver",
    ]
    assert names(await harness.get("/v1/machines?kind=server", viewer)) == ["acme-fileserver"]
    assert names(await harness.get("/v1/machines?state=offline", viewer)) == ["ACME-FRONTDESK"]
    assert names(await harness.get("/v1/machines?state=online", viewer)) == [
        "acme-fileserver",
        "globex-pc",
    ]
    assert names(await harness.get("/v1/machines?hostname=frontdesk", viewer)) == ["ACME-FRONTDESK"]


async def test_machines_are_paged_with_a_cursor(harness: Harness) -> None:
    _, token = await harness.add_client()
    viewer = await harness.api_token("viewer")
    for i in range(7):
        await harness.enroll(token, f"hw-{i}")
    seen: list[str] = []
    path = "/v1/machines?limit=3"
    while True:
        page = await harness.get(path, viewer)
        seen += [m["machine_id"] for m in page["machines"]]
        if page["next_cursor"] is None:
            break
        path = f"/v1/machines?limit=3&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 7


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("state=sleeping", "invalid_state"),
        ("kind=tablet", "invalid_kind"),
        ("limit=0", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("colour=blue", "unknown_parameter"),
        ("hostname=front%00desk", "invalid_parameter"),
        ("cursor=%00", "invalid_parameter"),
    ],
)
async def test_bad_machine_queries_are_400(harness: Harness, query: str, error: str) -> None:
    viewer = await harness.api_token("viewer")
    body = await harness.get(f"/v1/machines?{query}", viewer, status=400)
    assert body["error"] == error and body["detail"]


async def test_unknown_machine_is_404(harness: Harness) -> None:
    viewer = await harness.api_token("viewer")
    body = await harness.get("/v1/machines/no-such-machine", viewer, status=404)
    assert body["error"] == "machine_not_found"


async def test_a_machine_id_with_a_nul_character_is_refused_with_a_json_error(
    harness: Harness,
) -> None:
    """No machine has such an id (SQLite: 404); PostgreSQL cannot even search for one (400)."""
    viewer = await harness.api_token("viewer")
    on_postgres = harness.store.engine_name == "postgresql"
    status, error = (400, "invalid_text") if on_postgres else (404, "machine_not_found")
    body = await harness.get("/v1/machines/front%00desk", viewer, status=status)
    assert body["error"] == error and body["detail"]


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("viewer", "/v1/machines", 200),
        ("viewer", "/v1/inventory", 403),
        ("viewer", "/v1/audit", 403),
        ("technician", "/v1/machines", 200),
        ("technician", "/v1/inventory", 403),
        ("technician", "/v1/audit", 403),
        ("billing", "/v1/inventory", 200),
        ("billing", "/v1/audit", 403),
        ("admin", "/v1/inventory", 200),
        ("admin", "/v1/audit", 200),
    ],
)
async def test_roles_grant_least_privilege(
    harness: Harness, role: str, path: str, status: int
) -> None:
    headers = await harness.api_token(role)  # type: ignore[arg-type]
    resp = await harness.client.get(path, headers=headers)
    assert resp.status == status
    if status == 403:
        assert (await resp.json())["error"] == "forbidden"


async def test_agent_token_opens_no_peoples_endpoint(harness: Harness) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    headers = {"Authorization": f"Bearer {agent['agent_token']}"}
    for path in (
        "/v1/machines",
        f"/v1/machines/{agent['machine_id']}",
        "/v1/inventory",
        "/v1/audit",
    ):
        resp = await harness.client.get(path, headers=headers)
        assert resp.status == 403, path
        assert (await resp.json())["error"] == "agent_token_not_allowed"


async def test_missing_or_revoked_api_token_is_401(harness: Harness) -> None:
    admin = await harness.api_token("admin", name="alice")
    assert (await harness.client.get("/v1/machines")).status == 401
    await harness.store.revoke_api_token("alice", now=harness.clock.now(), actor="test")
    resp = await harness.client.get("/v1/machines", headers=admin)
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"


async def test_unknown_routes_and_methods_answer_json_errors(harness: Harness) -> None:
    resp = await harness.client.get("/v1/nothing-here")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await harness.client.delete("/v1/machines")
    assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
    resp = await harness.client.get("/v1/heartbeat")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_every_route_answers_refusals_in_its_own_shape(harness: Harness) -> None:
    # A route registered without its wrapper would answer with aiohttp's plain-text errors.
    for route in harness.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path == "/{path}":
            continue  # the catch-all picks the JSON or the page wrapper by path itself
        assert hasattr(route.handler, "__wrapped__"), (route.method, path)


async def test_audit_log_lists_newest_first_and_filters(harness: Harness) -> None:
    _, token = await harness.add_client()
    admin = await harness.api_token("admin")
    agent = await harness.enroll(token)
    entries = (await harness.get("/v1/audit", admin))["entries"]
    assert entries[0]["action"] == "machine.enrolled"
    assert entries[0]["actor"] == agent["agent_id"]
    assert {"at", "actor", "action", "target", "detail"} <= set(entries[0])
    only = (await harness.get("/v1/audit?action=client.created", admin))["entries"]
    assert [e["detail"]["name"] for e in only] == ["Acme Dental"]
    bad = await harness.get("/v1/audit?since=last-week", admin, status=400)
    assert bad["error"] == "invalid_since"
