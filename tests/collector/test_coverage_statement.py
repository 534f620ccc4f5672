"""The monthly coverage statement: per machine in inventory, the share of its heard time (its
heartbeats) in which each required component ran, the gaps, and a summary line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.rules.coverage import (
    MachineHistory,
    MonthError,
    coverage_statement,
    month_bounds,
)
from tests.collector.conftest import Harness, HarnessFactory

APRIL = (datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
AFTER_APRIL = datetime(2026, 5, 2, tzinfo=UTC)


def day(n: float) -> datetime:
    return APRIL[0] + timedelta(days=n - 1)


def report(**statuses: str) -> str:
    return json.dumps(
        [{"name": n, "status": s, "version": None, "required": True} for n, s in statuses.items()]
    )


def history(
    facts: list[tuple[datetime, str]],
    runs: list[tuple[datetime, datetime]] | None = None,
    periods: list[tuple[datetime, datetime | None]] | None = None,
    hostname: str = "front-desk",
) -> MachineHistory:
    return MachineHistory(
        machine_id=f"m-{hostname}",
        hostname=hostname,
        kind="pc",
        periods=periods or [(day(1), None)],
        runs=runs or [(day(1), APRIL[1])],
        facts=facts,
    )


def test_a_month_is_written_yyyy_mm_in_utc_and_must_have_begun() -> None:
    assert month_bounds("2026-04", AFTER_APRIL) == APRIL
    assert month_bounds("2026-12", datetime(2026, 12, 5, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    for bad in ("2026-4", "April", "2026-13", "2026-04-01"):
        with pytest.raises(MonthError):
            month_bounds(bad, AFTER_APRIL)
    with pytest.raises(MonthError, match="has not begun"):
        month_bounds("2026-06", AFTER_APRIL)


def test_two_days_of_stopped_antivirus_is_a_gap_and_the_share_of_the_rest() -> None:
    machine = history(
        [
            (day(1), "[]"),  # the enrollment: nothing reported yet, not a gap
            (day(1) + timedelta(minutes=1), report(rmm="running", antivirus="running")),
            (day(10), report(rmm="running", antivirus="stopped")),
            (day(12), report(rmm="running", antivirus="running")),
        ]
    )
    statement = coverage_statement([machine], *APRIL, AFTER_APRIL)
    (coverage,) = statement.machines
    antivirus, rmm = coverage.components
    heard = APRIL[1] - (day(1) + timedelta(minutes=1))
    assert antivirus.share == pytest.approx(1 - timedelta(days=2) / heard)
    assert [(g.start, g.end, g.status) for g in antivirus.gaps] == [(day(10), day(12), "stopped")]
    assert (rmm.share, rmm.gaps) == (1.0, ())
    assert not coverage.protected
    assert statement.summary == "0 of 1 machine protected 100% of the month"


def test_a_required_component_absent_from_a_report_is_missing() -> None:
    machine = history(
        [
            (day(1), report(rmm="running", backup="running")),
            (day(16), report(rmm="running")),
        ]
    )
    (coverage,) = coverage_statement([machine], *APRIL, AFTER_APRIL).machines
    backup = coverage.components[0]
    assert backup.name == "backup"
    assert backup.share == pytest.approx(0.5)
    assert [(g.start, g.status) for g in backup.gaps] == [(day(16), "missing")]


def test_a_switched_off_machine_is_silent_not_unprotected() -> None:
    machine = history(
        [(day(1), report(rmm="running", antivirus="running"))],
        runs=[(day(1), day(20)), (day(25), APRIL[1])],
    )
    (coverage,) = coverage_statement([machine], *APRIL, AFTER_APRIL).machines
    assert coverage.protected
    assert coverage.silences == ((day(20), day(25)),)


def test_only_machines_in_inventory_during_the_month_are_listed() -> None:
    expired_long_ago = history(
        [(day(1) - timedelta(days=90), report(rmm="running"))],
        runs=[(day(1) - timedelta(days=90), day(1) - timedelta(days=31))],
        periods=[(day(1) - timedelta(days=90), None)],
        hostname="old-laptop",
    )
    expiring_in_april = history(
        [(day(1) - timedelta(days=60), report(rmm="running"))],
        runs=[(day(1) - timedelta(days=60), day(1) - timedelta(days=20))],
        periods=[(day(1) - timedelta(days=60), None)],
        hostname="fading-pc",
    )
    offboarded_on_the_10th = history(
        [(day(1), report(rmm="running"))],
        runs=[(day(1), day(10))],
        periods=[(day(1) - timedelta(days=5), day(10))],
        hostname="returned-pc",
    )
    enrolled_in_may = history(
        [(APRIL[1], report(rmm="running"))],
        runs=[(APRIL[1], AFTER_APRIL)],
        periods=[(APRIL[1], None)],
        hostname="new-pc",
    )
    statement = coverage_statement(
        [expired_long_ago, expiring_in_april, offboarded_on_the_10th, enrolled_in_may],
        *APRIL,
        AFTER_APRIL,
    )
    assert [m.hostname for m in statement.machines] == ["fading-pc", "returned-pc"]
    fading, returned = statement.machines
    # Billed in April (seen within 30 days) but never heard from in it: not protected.
    assert not fading.heard and not fading.protected
    assert returned.protected and returned.heard_s == timedelta(days=9).total_seconds()
    assert statement.summary == "1 of 2 machines protected 100% of the month"


def test_the_month_under_way_is_cut_at_now() -> None:
    machine = history([(day(1), report(rmm="running"))], runs=[(day(1), day(6))])
    statement = coverage_statement([machine], *APRIL, day(6))
    assert statement.end == day(6) and not statement.complete
    assert statement.summary == "1 of 1 machine protected 100% of the month so far"


# The same rules through the API, on both engines, with real heartbeats through April.

EVERY = timedelta(hours=8)


def components(antivirus: str = "running") -> list[dict[str, Any]]:
    return [
        {"name": "rmm", "status": "running", "version": "0.1.0"},
        {"name": "antivirus", "status": antivirus, "version": "4.2"},
    ]


@pytest.fixture
async def slow_heartbeats(make_harness: HarnessFactory) -> Harness:
    """Heartbeats every 8 hours (online window 12 hours), so a month is 90 of them."""
    harness = await make_harness(heartbeat_interval_s=4 * 3600)
    harness.clock.set(APRIL[0])
    return harness


async def test_april_with_a_gap_a_silence_and_a_device_without_an_agent(
    slow_heartbeats: Harness,
) -> None:
    harness = slow_heartbeats
    client_id, token = await harness.add_client("Acme Dental")
    viewer = await harness.api_token("viewer")
    tech = await harness.api_token("technician")
    front = await harness.enroll(token, "hw-front", hostname="front-desk")
    back = await harness.enroll(token, "hw-back", hostname="back-office")
    lab = await harness.enroll(token, "hw-lab", hostname="lab-pc")
    while harness.clock.now() <= APRIL[1]:
        now = harness.clock.now()
        stopped = day(10) <= now < day(12)
        network = None
        if now == day(5):
            network = {
                "macs": ["02:00:00:00:00:01"],
                "neighbors": [
                    {"ip": "192.168.1.50", "mac": "3c:2a:f4:10:20:30"},
                    {"ip": "192.168.1.60", "mac": "a4:83:e7:00:11:22"},
                ],
            }
        await harness.heartbeat(
            front["agent_token"],
            components("stopped" if stopped else "running"),
            **({"network": network} if network else {}),
        )
        await harness.heartbeat(back["agent_token"], components())
        if not day(20) <= now < day(25):
            await harness.heartbeat(lab["agent_token"], components())
        await harness.flush()
        harness.clock.advance(hours=8)
    resp = await harness.client.post(
        f"/v1/clients/{client_id}/unmanaged/a4:83:e7:00:11:22/dismiss",
        headers=tech,
        json={"reason": "the manager's phone"},
    )
    assert resp.status == 200
    harness.clock.set(AFTER_APRIL)

    body = await harness.get(f"/v1/clients/{client_id}/coverage?month=2026-04", viewer)
    assert body["summary"] == "2 of 3 machines protected 100% of the month"
    assert (body["from"], body["to"], body["complete"]) == (
        "2026-04-01T00:00:00Z",
        "2026-05-01T00:00:00Z",
        True,
    )
    machines = {m["hostname"]: m for m in body["machines"]}
    assert list(machines) == ["back-office", "front-desk", "lab-pc"]
    antivirus = machines["front-desk"]["components"][0]
    assert antivirus["name"] == "antivirus"
    assert antivirus["share"] == pytest.approx(28 / 30, abs=1e-6)
    assert antivirus["gaps"] == [
        {
            "component": "antivirus",
            "from": "2026-04-10T00:00:00Z",
            "to": "2026-04-12T00:00:00Z",
            "status": "stopped",
        }
    ]
    assert machines["lab-pc"]["protected"] is True
    assert machines["lab-pc"]["silences"] == [
        {"from": "2026-04-19T16:00:00Z", "to": "2026-04-25T00:00:00Z"}
    ]
    assert [d["mac"] for d in body["unmanaged"]] == ["3c:2a:f4:10:20:30"]
    assert [(d["mac"], d["reason"]) for d in body["dismissed"]] == [
        ("a4:83:e7:00:11:22", "the manager's phone")
    ]


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("month=2026-4", 400, "invalid_month"),
        ("month=April", 400, "invalid_month"),
        ("month=2026-06", 400, "invalid_month"),
        ("month=2026-04&format=pdf", 400, "unknown_parameter"),
    ],
)
async def test_a_bad_month_or_parameter_is_a_clear_400(
    slow_heartbeats: Harness, query: str, status: int, error: str
) -> None:
    harness = slow_heartbeats
    client_id, _ = await harness.add_client()
    viewer = await harness.api_token("viewer")
    harness.clock.set(AFTER_APRIL)
    resp = await harness.client.get(f"/v1/clients/{client_id}/coverage?{query}", headers=viewer)
    assert resp.status == status
    answer = await resp.json()
    assert answer["error"] == error and answer["detail"]


async def test_the_statement_of_an_unknown_client_is_a_404(slow_heartbeats: Harness) -> None:
    viewer = await slow_heartbeats.api_token("viewer")
    resp = await slow_heartbeats.client.get(
        "/v1/clients/nope/coverage?month=2026-04", headers=viewer
    )
    assert (resp.status, (await resp.json())["error"]) == (404, "client_not_found")


def test_a_machine_is_not_silent_until_its_online_window_has_passed() -> None:
    machine = history([(day(1), report(rmm="running"))], runs=[(day(1), day(6))])
    late = day(6) + timedelta(minutes=2)
    statement = coverage_statement([machine], *APRIL, late, grace=timedelta(minutes=3))
    assert statement.machines[0].silences == ()
    later = coverage_statement([machine], *APRIL, day(7), grace=timedelta(minutes=3))
    assert later.machines[0].silences == ((day(6), day(7)),)
