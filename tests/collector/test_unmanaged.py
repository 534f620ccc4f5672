"""Unmanaged devices: neighbours a client's agents see whose MAC carries no agent, listed per
client, dismissed and restored by technicians with who and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.rules.network import device_mac, network_report, normalize_mac
from collector.store.base import AuditFilter
from tests.collector.conftest import Harness

PRINTER = "3c:2a:f4:10:20:30"
PHONE = "a4:83:e7:00:11:22"


def section(macs: list[str], neighbors: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "macs": macs,
        "addresses": ["192.168.1.10"],
        "neighbors": [{"ip": ip, "mac": mac} for ip, mac in neighbors],
    }


async def office(harness: Harness) -> dict[str, Any]:
    """Client Acme with two machines, front-desk and back-office, each knowing its own MAC."""
    client_id, token = await harness.add_client("Acme Dental")
    front = await harness.enroll(token, "hw-front", hostname="front-desk")
    back = await harness.enroll(token, "hw-back", hostname="back-office")
    await harness.heartbeat(front["agent_token"], network=section(["02:00:00:00:00:01"], []))
    await harness.heartbeat(back["agent_token"], network=section(["02:00:00:00:00:02"], []))
    await harness.flush()
    return {"client_id": client_id, "token": token, "front": front, "back": back}


async def unmanaged(harness: Harness, client_id: str, headers: dict[str, str]) -> list[Any]:
    body = await harness.get(f"/v1/clients/{client_id}/unmanaged", headers)
    return body["devices"]  # type: ignore[no-any-return]


def test_macs_compare_lower_case_with_colons_and_noise_is_never_a_device() -> None:
    assert normalize_mac("3C-2A-F4-10-20-30") == PRINTER
    assert normalize_mac("3c2af4102030") == PRINTER
    assert normalize_mac("a:b:c:d:e:f") == "0a:0b:0c:0d:0e:0f"
    assert normalize_mac("not a mac") is None
    assert device_mac("ff:ff:ff:ff:ff:ff") is None  # broadcast
    assert device_mac("01:00:5e:00:00:fb") is None  # IPv4 multicast (low bit of octet 1)
    assert device_mac("33:33:00:00:00:01") is None  # IPv6 multicast
    assert device_mac("00:00:00:00:00:00") is None  # all zero
    assert device_mac("02:00:00:00:00:01") == "02:00:00:00:00:01"  # locally administered


def test_a_machines_own_macs_are_never_its_neighbours_and_each_device_counts_once() -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    report = network_report(
        "m-1",
        "c-1",
        at,
        ["AA:BB:CC:00:00:01", "ff:ff:ff:ff:ff:ff"],
        [
            ("aa:bb:cc:00:00:01", "10.0.0.5"),
            ("3C:2A:F4:10:20:30", "10.0.0.7"),
            (PRINTER, "10.0.0.8"),
            ("01:00:5e:00:00:fb", "224.0.0.251"),
        ],
    )
    assert report.own_macs == ("aa:bb:cc:00:00:01",)
    assert report.neighbors == ((PRINTER, "10.0.0.8"),)


async def test_a_neighbour_without_an_agent_is_listed_with_who_saw_it_and_when(
    harness: Harness,
) -> None:
    acme = await office(harness)
    viewer = await harness.api_token("viewer")
    harness.clock.advance(minutes=15)
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(
            ["02:00:00:00:00:01"],
            [
                ("192.168.1.50", "3C-2A-F4-10-20-30"),  # the printer, written the Windows way
                ("192.168.1.11", "02:00:00:00:00:02"),  # back-office: it carries the agent
                ("192.168.1.255", "ff:ff:ff:ff:ff:ff"),
                ("224.0.0.251", "01:00:5e:00:00:fb"),
                ("192.168.1.99", "00:00:00:00:00:00"),
            ],
        ),
    )
    await harness.flush()
    harness.clock.advance(minutes=15)
    await harness.heartbeat(
        acme["back"]["agent_token"],
        network=section(["02:00:00:00:00:02"], [("192.168.1.51", PRINTER)]),
    )
    await harness.flush()
    devices = await unmanaged(harness, acme["client_id"], viewer)
    assert devices == [
        {
            "mac": PRINTER,
            "ip": "192.168.1.51",
            "first_seen": "2026-03-02T09:15:00Z",
            "last_seen": "2026-03-02T09:30:00Z",
            "seen_by": sorted([acme["front"]["machine_id"], acme["back"]["machine_id"]]),
        }
    ]


async def test_one_clients_devices_never_show_in_anothers_list(harness: Harness) -> None:
    acme = await office(harness)
    globex_id, globex_token = await harness.add_client("Globex")
    globex = await harness.enroll(globex_token, "hw-globex", hostname="globex-pc")
    viewer = await harness.api_token("viewer")
    await harness.heartbeat(
        globex["agent_token"],
        network=section(["02:00:00:00:00:09"], [("10.9.0.5", PHONE), ("10.9.0.6", PRINTER)]),
    )
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER)]),
    )
    await harness.flush()
    acme_devices = await unmanaged(harness, acme["client_id"], viewer)
    globex_devices = await unmanaged(harness, globex_id, viewer)
    assert [(d["mac"], d["ip"], d["seen_by"]) for d in acme_devices] == [
        (PRINTER, "192.168.1.50", [acme["front"]["machine_id"]])
    ]
    assert [(d["mac"], d["seen_by"]) for d in globex_devices] == [
        (PRINTER, [globex["machine_id"]]),
        (PHONE, [globex["machine_id"]]),
    ]


async def test_a_device_not_seen_for_30_days_drops_off_the_list(harness: Harness) -> None:
    acme = await office(harness)
    viewer = await harness.api_token("viewer")
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER)]),
    )
    await harness.flush()
    harness.clock.advance(hours=719)
    assert [d["mac"] for d in await unmanaged(harness, acme["client_id"], viewer)] == [PRINTER]
    harness.clock.advance(hours=1)
    assert await unmanaged(harness, acme["client_id"], viewer) == []


async def test_a_dismissed_device_stays_hidden_when_seen_again_until_restored(
    harness: Harness,
) -> None:
    acme = await office(harness)
    tech = await harness.api_token("technician", name="tina")
    admin = await harness.api_token("admin")
    seen = section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER), ("192.168.1.60", PHONE)])
    await harness.heartbeat(acme["front"]["agent_token"], network=seen)
    await harness.flush()
    base = f"/v1/clients/{acme['client_id']}/unmanaged"
    resp = await harness.client.post(
        f"{base}/3C-2A-F4-10-20-30/dismiss", headers=tech, json={"reason": "reception printer"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["dismissed_by"] == "tina"
    harness.clock.advance(minutes=15)
    await harness.heartbeat(acme["front"]["agent_token"], network=seen)
    await harness.flush()
    assert [d["mac"] for d in await unmanaged(harness, acme["client_id"], tech)] == [PHONE]
    listed = await harness.get(f"{base}?dismissed=1", tech)
    assert [(d["mac"], d["reason"], d["dismissed_by"]) for d in listed["dismissed"]] == [
        (PRINTER, "reception printer", "tina")
    ]
    entries = await harness.store.list_audit(AuditFilter(action="device.dismissed"))
    assert [(e.actor, e.target, e.detail["reason"]) for _, e in entries] == [
        ("tina", PRINTER, "reception printer")
    ]
    resp = await harness.client.post(
        f"{base}/{PRINTER}/restore", headers=admin, json={"reason": "it was a PC after all"}
    )
    assert resp.status == 200, await resp.text()
    assert [d["mac"] for d in await unmanaged(harness, acme["client_id"], tech)] == [
        PRINTER,
        PHONE,
    ]
    restored = await harness.store.list_audit(AuditFilter(action="device.restored"))
    assert [(e.detail["reason"], e.detail["dismissed_for"]) for _, e in restored] == [
        ("it was a PC after all", "reception printer")
    ]


@pytest.mark.parametrize(
    ("role", "client", "mac", "body", "status", "error"),
    [
        ("technician", "acme", "printer-1", {"reason": "x"}, 400, "invalid_mac"),
        ("technician", "acme", "ff:ff:ff:ff:ff:ff", {"reason": "x"}, 400, "invalid_mac"),
        ("technician", "acme", "01:00:5e:00:00:fb", {"reason": "x"}, 400, "invalid_mac"),
        ("technician", "nobody", PRINTER, {"reason": "x"}, 404, "client_not_found"),
        ("technician", "acme", PHONE, {"reason": "x"}, 404, "device_not_found"),
        ("technician", "acme", PRINTER, {"reason": "x", "until": "never"}, 400, "invalid_body"),
        ("technician", "acme", PRINTER, {}, 400, "invalid_body"),
        ("technician", "acme", PRINTER, {"reason": ""}, 400, "invalid_body"),
        ("technician", "acme", PRINTER, {"reason": "a\x00b"}, 400, "invalid_body"),
        ("viewer", "acme", PRINTER, {"reason": "x"}, 403, "forbidden"),
        ("billing", "acme", PRINTER, {"reason": "x"}, 403, "forbidden"),
    ],
)
async def test_a_refused_dismissal_says_why_and_changes_nothing(
    harness: Harness,
    role: str,
    client: str,
    mac: str,
    body: dict[str, Any],
    status: int,
    error: str,
) -> None:
    acme = await office(harness)
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER)]),
    )
    await harness.flush()
    headers = await harness.api_token(role)  # type: ignore[arg-type]
    client_id = acme["client_id"] if client == "acme" else "no-such-client"
    before = await harness.store.list_audit(AuditFilter())
    resp = await harness.client.post(
        f"/v1/clients/{client_id}/unmanaged/{mac}/dismiss", headers=headers, json=body
    )
    assert resp.status == status, await resp.text()
    answer = await resp.json()
    assert answer["error"] == error and answer["detail"]
    assert await harness.store.list_audit(AuditFilter()) == before
    assert [d["mac"] for d in await unmanaged(harness, acme["client_id"], headers)] == [PRINTER]


async def test_dismissing_twice_or_restoring_what_is_not_dismissed_is_a_conflict(
    harness: Harness,
) -> None:
    acme = await office(harness)
    tech = await harness.api_token("technician")
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER)]),
    )
    await harness.flush()
    base = f"/v1/clients/{acme['client_id']}/unmanaged/{PRINTER}"
    restore = await harness.client.post(f"{base}/restore", headers=tech, json={})
    assert (restore.status, (await restore.json())["error"]) == (409, "not_dismissed")
    first = await harness.client.post(f"{base}/dismiss", headers=tech, json={"reason": "printer"})
    assert first.status == 200
    second = await harness.client.post(f"{base}/dismiss", headers=tech, json={"reason": "again"})
    assert (second.status, (await second.json())["error"]) == (409, "already_dismissed")
    dismissed = await harness.store.dismissed_devices(acme["client_id"])
    assert [d.reason for d in dismissed] == ["printer"]


async def test_the_unmanaged_list_of_an_unknown_client_is_a_404_and_needs_a_token(
    harness: Harness,
) -> None:
    viewer = await harness.api_token("viewer")
    resp = await harness.client.get("/v1/clients/nope/unmanaged", headers=viewer)
    assert (resp.status, (await resp.json())["error"]) == (404, "client_not_found")
    resp = await harness.client.get("/v1/clients/nope/unmanaged")
    assert resp.status == 401
    resp = await harness.client.get("/v1/clients/nope/unmanaged?bogus=1", headers=viewer)
    assert (resp.status, (await resp.json())["error"]) == (400, "unknown_parameter")


async def test_the_inventory_lists_each_clients_unmanaged_devices_as_of_its_instant(
    harness: Harness,
) -> None:
    acme = await office(harness)
    billing = await harness.api_token("billing")
    tech = await harness.api_token("technician")
    before_any = harness.clock.now()
    harness.clock.advance(hours=1)
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(
            ["02:00:00:00:00:01"], [("192.168.1.50", PRINTER), ("192.168.1.60", PHONE)]
        ),
    )
    await harness.flush()
    seen_at = harness.clock.now()
    harness.clock.advance(days=2)
    resp = await harness.client.post(
        f"/v1/clients/{acme['client_id']}/unmanaged/{PHONE}/dismiss",
        headers=tech,
        json={"reason": "the manager's phone"},
    )
    assert resp.status == 200
    harness.clock.advance(days=1)

    async def unmanaged_at(as_of: str) -> list[Any]:
        body = await harness.get(f"/v1/inventory?as_of={as_of}", billing)
        return body["unmanaged"]  # type: ignore[no-any-return]

    assert await unmanaged_at(before_any.isoformat()) == []
    # Before the dismissal both devices were unmanaged; the phone was dismissed since.
    day_after = (seen_at + timedelta(days=1)).isoformat()
    assert [d["mac"] for d in await unmanaged_at(day_after)] == [PRINTER, PHONE]
    now_listed = await unmanaged_at(harness.clock.now().isoformat())
    assert now_listed == [
        {
            "client_id": acme["client_id"],
            "mac": PRINTER,
            "ip": "192.168.1.50",
            "first_seen": "2026-03-02T10:00:00Z",
            "last_seen": "2026-03-02T10:00:00Z",
        }
    ]
    later = (seen_at + timedelta(hours=720)).isoformat()
    harness.clock.advance(days=40)
    assert await unmanaged_at(later) == []


async def test_an_unchanged_section_is_written_once_an_hour_a_changed_one_at_once(
    harness: Harness,
) -> None:
    acme = await office(harness)
    viewer = await harness.api_token("viewer")
    agent = acme["front"]["agent_token"]
    seen = section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER)])
    harness.clock.set(harness.clock.now().replace(minute=0))
    await harness.heartbeat(agent, network=seen)
    await harness.flush()
    harness.clock.advance(minutes=15)
    await harness.heartbeat(agent, network=seen)  # the same LAN, the same hour: not written
    await harness.flush()
    (device,) = await unmanaged(harness, acme["client_id"], viewer)
    assert device["last_seen"] == "2026-03-02T09:00:00Z"
    harness.clock.advance(minutes=15)
    moved = section(["02:00:00:00:00:01"], [("192.168.1.77", PRINTER)])
    await harness.heartbeat(agent, network=moved)  # a change is written at once
    await harness.flush()
    (device,) = await unmanaged(harness, acme["client_id"], viewer)
    assert (device["ip"], device["last_seen"]) == ("192.168.1.77", "2026-03-02T09:30:00Z")
    harness.clock.advance(minutes=45)
    await harness.heartbeat(agent, network=moved)  # the next hour: written again
    await harness.flush()
    (device,) = await unmanaged(harness, acme["client_id"], viewer)
    assert device["last_seen"] == "2026-03-02T10:15:00Z"


async def test_a_network_section_that_does_not_fit_is_dropped_and_the_heartbeat_counts(
    harness: Harness,
) -> None:
    acme = await office(harness)
    viewer = await harness.api_token("viewer")
    harness.clock.advance(hours=1)
    await harness.heartbeat(acme["front"]["agent_token"], network={"macs": "not a list"})
    await harness.heartbeat(acme["back"]["agent_token"], network=None)
    await harness.flush()
    front = await harness.get(f"/v1/machines/{acme['front']['machine_id']}", viewer)
    assert front["last_seen"] == "2026-03-02T10:00:00Z"
    assert await unmanaged(harness, acme["client_id"], viewer) == []


async def test_sightings_older_than_the_retention_horizon_are_compacted(
    harness: Harness,
) -> None:
    acme = await office(harness)
    billing = await harness.api_token("billing")
    await harness.heartbeat(
        acme["front"]["agent_token"],
        network=section(["02:00:00:00:00:01"], [("192.168.1.50", PRINTER)]),
    )
    await harness.flush()
    seen_at = harness.clock.now()
    harness.clock.advance(days=100)
    # A horizon just after the sighting: answers as of it still read the sighting.
    assert await harness.store.compact_sightings(horizon_start=seen_at + timedelta(days=1)) == 0
    past = (seen_at + timedelta(days=1)).isoformat()
    body = await harness.get(f"/v1/inventory?as_of={past}", billing)
    assert [d["mac"] for d in body["unmanaged"]] == [PRINTER]
    # A horizon 40 days on: no answer from then on can read it any more.
    assert await harness.store.compact_sightings(horizon_start=seen_at + timedelta(days=40)) == 2
    body = await harness.get(f"/v1/inventory?as_of={past}", billing)
    assert body["unmanaged"] == []


async def test_a_machine_that_changes_its_mac_no_longer_owns_the_old_one(
    harness: Harness,
) -> None:
    acme = await office(harness)
    viewer = await harness.api_token("viewer")
    old_nic = "02:00:00:00:00:01"
    front, back = acme["front"]["agent_token"], acme["back"]["agent_token"]
    harness.clock.advance(minutes=15)
    await harness.heartbeat(front, network=section([old_nic], [("192.168.1.50", PRINTER)]))
    await harness.heartbeat(back, network=section(["02:00:00:00:00:02"], [("10.0.0.1", old_nic)]))
    await harness.flush()
    # front-desk still owns its MAC (its section repeated it): only the printer is unmanaged.
    assert [d["mac"] for d in await unmanaged(harness, acme["client_id"], viewer)] == [PRINTER]
    harness.clock.advance(minutes=15)
    await harness.heartbeat(front, network=section(["02:00:00:00:00:09"], []))  # a new NIC
    await harness.flush()
    devices = await unmanaged(harness, acme["client_id"], viewer)
    assert sorted(d["mac"] for d in devices) == sorted([PRINTER, old_nic])
