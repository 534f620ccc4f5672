"""Clones: two live copies behind one machine are flagged, shown with what differs, and split
apart by a technician; no clone ever revokes the real machine silently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.clones import detect_clones
from collector.rules.clones import (
    Candidate,
    Identity,
    KnownMachine,
    ResolutionError,
    Track,
    check_enrollment,
    mac_switch,
    observe,
    resolve,
)
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
A = Identity("front-desk", frozenset({"02:00:00:00:00:01"}))
B = Identity("front-desk-copy", frozenset({"02:00:00:00:00:02"}))


def walk(*steps: tuple[float, Identity]) -> list[Any]:
    track: Track | None = None
    clues = []
    for hours, identity in steps:
        track, clue = observe(track, identity, T0 + timedelta(hours=hours))
        clues.append(clue)
    return clues


def test_a_rename_is_no_clone_but_switching_back_within_a_day_is() -> None:
    assert walk((0, A), (1, B), (2, B)) == [None, None, None]
    *_, clue = walk((0, A), (1, B), (2, A))
    assert (clue.first.hostname, clue.second.hostname) == ("front-desk", "front-desk-copy")
    assert walk((0, A), (1, B), (26, A))[-1] is None


def test_identities_differ_by_hostname_or_by_macs_sharing_none() -> None:
    assert A.differs(B)
    assert not A.differs(Identity("FRONT-DESK"))
    assert not A.differs(Identity(None, frozenset({"02:00:00:00:00:01", "02:00:00:00:00:09"})))
    assert A.differs(Identity("front-desk", frozenset({"02:00:00:00:00:09"})))
    # A heartbeat that names no hostname and no MACs says nothing either way.
    assert walk((0, A), (1, Identity(None)), (2, A)) == [None, None, None]


def test_own_macs_switching_back_within_a_day_is_a_clue() -> None:
    one, two = frozenset({"02:00:00:00:00:01"}), frozenset({"02:00:00:00:00:02"})
    first, clue = mac_switch(None, one, two, T0)
    assert first is not None and clue is None
    _, clue = mac_switch(first, two, one, T0 + timedelta(minutes=15))
    assert clue is not None and clue.first.macs == one
    # A new network card that adds a MAC is no switch at all.
    assert mac_switch(None, one, one | two, T0) == (None, None)


def test_known_hardware_enrolling_under_another_name_while_online_is_a_suspect() -> None:
    online = KnownMachine("m-1", "front-desk", T0, ended=False, approved=False)
    since = T0 - timedelta(minutes=3)
    assert check_enrollment(online, "rogue", has_proof=False, online_since=since).suspected
    # A copied credential proves nothing about which copy is real: held all the same.
    assert check_enrollment(online, "rogue", has_proof=True, online_since=since).hold
    assert not check_enrollment(online, "front-desk", has_proof=True, online_since=since).suspected
    offline = KnownMachine("m-1", "front-desk", T0 - timedelta(hours=1), False, False)
    assert not check_enrollment(offline, "rogue", has_proof=False, online_since=since).suspected
    approved = KnownMachine("m-1", "front-desk", T0, ended=False, approved=True)
    assert not check_enrollment(approved, "rogue", has_proof=False, online_since=since).suspected


def test_copies_reporting_the_same_hostname_cannot_be_split() -> None:
    same = [Candidate("1", Identity("pc", frozenset({"a"}))), Candidate("2", Identity("pc"))]
    with pytest.raises(ResolutionError, match="same hostname"):
        resolve(same, "1")
    assert resolve(same, "both").split is None


# Through the API, on both engines.


async def alternate(harness: Harness, agent_token: str, *hostnames: str) -> None:
    for hostname in hostnames:
        harness.clock.advance(minutes=1)
        await harness.heartbeat(agent_token, hostname=hostname)
        await harness.flush()


async def machine(harness: Harness, machine_id: str, headers: dict[str, str]) -> Any:
    return await harness.get(f"/v1/machines/{machine_id}", headers)


async def test_one_credential_from_two_hosts_is_flagged_and_split_by_a_technician(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    tech = await harness.api_token("technician", name="tina")
    billing = await harness.api_token("billing")
    real = await harness.enroll(token, "hw-golden", hostname="front-desk")
    await alternate(harness, real["agent_token"], "front-desk", "front-desk-copy", "front-desk")
    assert await detect_clones(harness.app) == [real["machine_id"]]
    assert await detect_clones(harness.app) == []  # flagged once
    assert "clone_suspected" in (await machine(harness, real["machine_id"], tech))["flags"]
    (suspicion,) = (await harness.get(f"/v1/machines/{real['machine_id']}/clones", tech))[
        "suspicions"
    ]
    assert suspicion["state"] == "open"
    assert [c["hostname"] for c in suspicion["candidates"]] == ["front-desk", "front-desk-copy"]

    resp = await harness.client.post(
        f"/v1/machines/{real['machine_id']}/clone/resolve",
        headers=tech,
        json={"keep": "1", "reason": "the copy is the new reception PC"},
    )
    assert resp.status == 200, await resp.text()
    resolved = await resp.json()
    assert (resolved["kept_hostname"], resolved["split_hostname"]) == (
        "front-desk",
        "front-desk-copy",
    )
    assert "clone_suspected" not in (await machine(harness, real["machine_id"], tech))["flags"]
    # The copy's heartbeats under the shared credential are refused; the real one's are not.
    refused = await harness.client.post(
        "/v1/heartbeat",
        json={"components": [], "hostname": "front-desk-copy"},
        headers={"Authorization": f"Bearer {real['agent_token']}"},
    )
    assert (refused.status, (await refused.json())["error"]) == (401, "clone_split")
    await harness.heartbeat(real["agent_token"], hostname="front-desk")
    # The copy enrolls again with the credential it copied: a record of its own.
    copy = await harness.enroll(
        token,
        "hw-golden",
        hostname="front-desk-copy",
        previous_agent_token=real["agent_token"],
    )
    assert copy["machine_id"] != real["machine_id"]
    await harness.heartbeat(real["agent_token"], hostname="front-desk")  # never revoked
    await harness.heartbeat(copy["agent_token"], hostname="front-desk-copy")
    await harness.flush()
    harness.clock.advance(minutes=1)
    inventory = await harness.get("/v1/inventory", billing)
    assert sorted(m["hostname"] for m in inventory["machines"]) == [
        "front-desk",
        "front-desk-copy",
    ]
    actions = [e.action for _, e in await harness.store.list_audit(AuditFilter())]
    for action in ("machine.clone_suspected", "machine.clone_resolved", "machine.clone_split"):
        assert action in actions
    # Enrolling again later is the copy's own re-enrollment, not another split.
    again = await harness.enroll(
        token, "hw-golden", hostname="front-desk", previous_agent_token=real["agent_token"]
    )
    assert again["machine_id"] == real["machine_id"]


async def test_hardware_enrolling_as_another_host_while_online_never_revokes_the_real_one(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    tech = await harness.api_token("technician")
    real = await harness.enroll(token, "hw-golden", hostname="front-desk")
    await harness.heartbeat(real["agent_token"], hostname="front-desk")
    await harness.flush()
    body = {
        "enrollment_token": token,
        "hardware_id": "hw-golden",
        "hostname": "rogue",
        "os": "Linux 6.1",
        "kind": "pc",
        # A copied state folder carries the real machine's credential.
        "previous_agent_token": real["agent_token"],
    }
    held = await harness.client.post("/v1/enroll", json=body)
    assert (held.status, (await held.json())["state"]) == (202, "awaiting_approval")
    await harness.heartbeat(real["agent_token"], hostname="front-desk")  # still works
    flagged = await machine(harness, real["machine_id"], tech)
    assert "clone_suspected" in flagged["flags"]
    (suspicion,) = (await harness.get(f"/v1/machines/{real['machine_id']}/clones", tech))[
        "suspicions"
    ]
    assert [(c["hostname"], c["held"]) for c in suspicion["candidates"]] == [
        ("front-desk", False),
        ("rogue", True),
    ]
    # The technician finds the held one is the real machine (re-imaged and renamed).
    resp = await harness.client.post(
        f"/v1/machines/{real['machine_id']}/clone/resolve",
        headers=tech,
        json={"keep": "2", "reason": "re-imaged as rogue; front-desk is a stale copy"},
    )
    assert resp.status == 200, await resp.text()
    kept = await harness.client.post("/v1/enroll", json=body)
    assert kept.status == 201
    assert (await kept.json())["machine_id"] == real["machine_id"]


@pytest.mark.parametrize(
    ("role", "body", "status", "error"),
    [
        ("viewer", {"keep": "1", "reason": "x"}, 403, "forbidden"),
        ("technician", {"keep": "3", "reason": "x"}, 400, "invalid_body"),
        ("technician", {"keep": "1"}, 400, "invalid_body"),
        ("technician", {"keep": "1", "reason": "x", "force": True}, 400, "invalid_body"),
    ],
)
async def test_a_refused_resolution_says_why_and_changes_nothing(
    harness: Harness, role: str, body: dict[str, Any], status: int, error: str
) -> None:
    _, token = await harness.add_client()
    headers = await harness.api_token(role)  # type: ignore[arg-type]
    real = await harness.enroll(token, "hw-golden", hostname="front-desk")
    await alternate(harness, real["agent_token"], "front-desk", "copy", "front-desk")
    await detect_clones(harness.app)
    resp = await harness.client.post(
        f"/v1/machines/{real['machine_id']}/clone/resolve", headers=headers, json=body
    )
    assert resp.status == status
    answer = await resp.json()
    assert answer["error"] == error and answer["detail"]
    assert "clone_suspected" in (await machine(harness, real["machine_id"], headers))["flags"]


async def test_resolving_what_is_not_suspected_or_no_machine_is_refused(harness: Harness) -> None:
    _, token = await harness.add_client()
    tech = await harness.api_token("technician")
    real = await harness.enroll(token, "hw-1")
    body = {"keep": "1", "reason": "x"}
    resp = await harness.client.post(
        f"/v1/machines/{real['machine_id']}/clone/resolve", headers=tech, json=body
    )
    assert (resp.status, (await resp.json())["error"]) == (409, "no_clone_suspected")
    resp = await harness.client.post("/v1/machines/nope/clone/resolve", headers=tech, json=body)
    assert (resp.status, (await resp.json())["error"]) == (404, "machine_not_found")


async def test_own_macs_taking_turns_flag_a_clone_that_needs_a_rename_to_split(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    tech = await harness.api_token("technician")
    real = await harness.enroll(token, "hw-golden", hostname="front-desk")
    for macs in (["02:00:00:00:00:01"], ["02:00:00:00:00:02"], ["02:00:00:00:00:01"]):
        harness.clock.advance(minutes=15)
        await harness.heartbeat(
            real["agent_token"], hostname="front-desk", network={"macs": macs, "neighbors": []}
        )
        await harness.flush()
    assert "clone_suspected" in (await machine(harness, real["machine_id"], tech))["flags"]
    resp = await harness.client.post(
        f"/v1/machines/{real['machine_id']}/clone/resolve",
        headers=tech,
        json={"keep": "1", "reason": "x"},
    )
    assert (resp.status, (await resp.json())["error"]) == (409, "clone_indistinct")
    resp = await harness.client.post(
        f"/v1/machines/{real['machine_id']}/clone/resolve",
        headers=tech,
        json={"keep": "both", "reason": "one NIC swapped twice, not a clone"},
    )
    assert resp.status == 200
    assert "clone_suspected" not in (await machine(harness, real["machine_id"], tech))["flags"]
