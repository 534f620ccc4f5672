"""What the pages flag for a person: a kind an agent reports but nobody confirmed, an agent's
clock far off, a database that cannot write, and an offboard's progress and refusals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.health import WriteHealth
from collector.keys import KeyRing
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness, HarnessFactory
from tests.collector.web.conftest import BrowserFactory
from tests.support.clock import FakeClock
from wire.times import format_instant


class FakeMonotonic:
    now = 500.0

    def __call__(self) -> float:
        return self.now


MONOTONIC = FakeMonotonic()


@pytest.fixture
async def site(make_harness: HarnessFactory, clock: FakeClock, tmp_path: Path) -> Harness:
    """The collector with a signing key, its write health on a clock the test moves."""
    KeyRing(tmp_path / "keys").generate(clock.now())
    MONOTONIC.now = 500.0
    return await make_harness(
        keys_dir=str(tmp_path / "keys"), health=WriteHealth(1.0, monotonic=MONOTONIC)
    )


async def test_a_reported_kind_waits_for_an_admin_who_confirms_it_on_the_machine_page(
    browser: BrowserFactory, site: Harness
) -> None:
    _, token = await site.add_client()
    agent = await site.enroll(token, kind="pc")
    await site.heartbeat(agent["agent_token"], kind="server")
    await site.flush()
    path = f"/machines/{agent['machine_id']}"

    viewer = await (await browser()).sign_in("viewer")
    seen = await viewer.get(path)
    assert "the agent reports a server; billed as a PC until an admin confirms" in seen.text
    assert "Bill as a server" not in seen.text
    await viewer.post(f"{path}/kind", {"csrf": viewer.csrf, "kind": "server"}, status=403)

    admin = await (await browser()).sign_in("admin", name="ada")
    await admin.post(f"{path}/kind", {"csrf": admin.csrf, "kind": "server"}, status=303)
    after = await admin.get(path)
    assert "Server" in after.text and "until an admin confirms" not in after.text
    ((_, entry),) = await site.store.list_audit(AuditFilter(action="machine.kind_confirmed"))
    assert (entry.actor, entry.detail["from"], entry.detail["to"]) == ("ada", "pc", "server")


async def test_an_agent_clock_ten_minutes_off_is_flagged_on_its_page(
    browser: BrowserFactory, site: Harness
) -> None:
    _, token = await site.add_client()
    agent = await site.enroll(token)
    behind = format_instant(site.clock.now() - timedelta(minutes=10))
    await site.heartbeat(agent["agent_token"], agent_time=behind)
    await site.flush()
    b = await (await browser()).sign_in("viewer")
    page = await b.get(f"/machines/{agent['machine_id']}")
    assert "-600 s from the collector's" in page.text
    assert "skewed: signed commands may be refused" in page.text


async def test_every_page_says_so_while_the_database_cannot_write(
    browser: BrowserFactory, site: Harness
) -> None:
    b = await (await browser()).sign_in("viewer")
    assert "cannot write to its database" not in (await b.get("/")).text
    MONOTONIC.now += 6
    page = await b.get("/machines")
    assert "The collector cannot write to its database:" in page.text
    assert "no database write has succeeded for 6 s" in page.text


async def test_the_follow_page_shows_the_step_running_and_the_latest_refusal(
    browser: BrowserFactory, site: Harness
) -> None:
    _, token = await site.add_client()
    agent = await site.enroll(token)
    tech = await site.api_token("technician", name="tina")
    resp = await site.client.post(
        f"/v1/machines/{agent['machine_id']}/offboard", json={"reason": "returned"}, headers=tech
    )
    command_id = (await resp.json())["command_id"]
    auth = {"Authorization": f"Bearer {agent['agent_token']}"}
    await site.client.post(
        f"/v1/commands/{command_id}/result",
        json={"status": "rejected", "reason": "expired: the agent's clock is 12 min ahead"},
        headers=auth,
    )
    await site.client.post(
        f"/v1/commands/{command_id}/progress",
        json={
            "steps": [{"component": "antivirus", "argv": ["purge", "av"], "status": "ok"}],
            "running": {
                "component": "dns_protection",
                "argv": ["purge", "dnsmasq"],
                "started_at": format_instant(site.clock.now()),
            },
        },
        headers=auth,
    )
    b = await (await browser()).sign_in("viewer")
    page = await b.get(f"/commands/{command_id}")
    assert "dns_protection: purge dnsmasq" in page.text
    assert "expired: the agent&#39;s clock is 12 min ahead" in page.html
    assert "purge av" in page.text  # the step already done, before the final report
    live = await (await b.client.get(f"/commands/{command_id}/live")).json()
    assert live["running_text"].startswith("dns_protection: purge dnsmasq")
    assert live["last_rejection_text"].startswith("expired:")


async def test_a_held_enrollment_is_shown_and_a_technician_approves_it_on_the_machine_page(
    browser: BrowserFactory, site: Harness
) -> None:
    _, token = await site.add_client()
    agent = await site.enroll(token, "hw-secret-1", hostname="front-desk")
    resp = await site.client.post(
        "/v1/enroll",
        json={
            "enrollment_token": token,
            "hardware_id": "hw-secret-1",
            "hostname": "intruder",
            "os": "Linux",
            "kind": "pc",
        },
    )
    assert resp.status == 202
    path = f"/machines/{agent['machine_id']}"

    viewer = await (await browser()).sign_in("viewer")
    seen = await viewer.get(path)
    assert "Enrollment waiting for approval" in seen.text and "intruder" in seen.text
    assert "hw-secret-1" not in seen.text  # viewers never see the hardware id
    assert "Approve: let it enroll again" not in seen.text
    await viewer.post(f"{path}/approve-reenroll", {"csrf": viewer.csrf}, status=403)

    tech = await (await browser()).sign_in("technician", name="tina")
    assert "hw-secret-1" in (await tech.get(path)).text
    await tech.post(f"{path}/approve-reenroll", {"csrf": tech.csrf}, status=303)
    ((_, entry),) = await site.store.list_audit(AuditFilter(action="machine.reenroll_approved"))
    assert entry.actor == "tina"


async def test_the_follow_page_shows_who_signed_an_order_awaiting_approval(
    browser: BrowserFactory, site: Harness
) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wire.orders import sign_order
    from wire.signing import key_id_for, pin_line

    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _, token = await site.add_client()
    agent = await site.enroll(token, "hw-1")
    await site.heartbeat(
        agent["agent_token"],
        offboard_approvals=2,
        operator_key_ids=[key_id_for(alice.public_key()), key_id_for(bob.public_key())],
    )
    tech = await site.api_token("technician", name="tina")
    resp = await site.client.post(
        f"/v1/machines/{agent['machine_id']}/offboard", json={"reason": "returned"}, headers=tech
    )
    requested = await resp.json()
    approval = sign_order(base64.b64decode(requested["order"]), alice)
    resp = await site.client.post(
        f"/v1/commands/{requested['command_id']}/approvals",
        json={
            "key_id": approval.key_id,
            "signature": approval.signature,
            "public_key": pin_line(alice.public_key()),
        },
        headers=tech,
    )
    assert resp.status == 200
    viewer = await (await browser()).sign_in("viewer")
    page = await viewer.get(f"/commands/{requested['command_id']}")
    assert "Awaiting approval" in page.text
    assert "1 of 2 required signature(s)" in page.text
    assert key_id_for(alice.public_key()) in page.text and "sent by tina" in page.text


@pytest.mark.parametrize(
    ("policy", "said"),
    [
        ({"offboard_approvals": 0, "operator_key_ids": []}, "needs no operator signature"),
        ({}, "has not said what it requires"),
    ],
)
async def test_the_follow_page_of_an_agent_needing_no_signature_says_why_not_0_of_0(
    browser: BrowserFactory, site: Harness, policy: dict[str, Any], said: str
) -> None:
    _, token = await site.add_client()
    agent = await site.enroll(token, "hw-1")
    await site.heartbeat(agent["agent_token"], **policy)
    tech = await site.api_token("technician", name="tina")
    resp = await site.client.post(
        f"/v1/machines/{agent['machine_id']}/offboard", json={"reason": "returned"}, headers=tech
    )
    requested = await resp.json()
    viewer = await (await browser()).sign_in("viewer")
    page = await viewer.get(f"/commands/{requested['command_id']}")
    assert said in page.text
    assert "0 of 0" not in page.text
