"""The seed's three stories, end to end: machines live through March to May 2026 on the real
collector (with the clock set by the test), then `rmm-billing run` bills April and May from the
collector's `GET /v1/inventory` over HTTP, as the billing team runs it."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.keys import KeyRing
from tests.collector.conftest import Harness, HarnessFactory

BILLING = str(Path(sys.executable).parent / "rmm-billing")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def bill(harness: Harness, month: str, token: str, tmp_path: Path) -> dict[str, Any]:
    prices = tmp_path / "prices.toml"
    out = tmp_path / f"out-{month}"
    process = await asyncio.create_subprocess_exec(
        BILLING,
        "run",
        "--month",
        month,
        "--prices",
        str(prices),
        "--out",
        str(out),
        "--ledger",
        str(tmp_path / "billing-ledger.sqlite3"),
        "--collector",
        str(harness.client.make_url("")).rstrip("/"),
        "--token",
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode() + stdout.decode()
    return json.loads((out / "invoices.json").read_text())  # type: ignore[no-any-return]


def lines(invoices: dict[str, Any]) -> dict[str, tuple[int, str]]:
    (invoice,) = invoices["invoices"]
    return {line["kind"]: (line["quantity"], line["amount"]) for line in invoice["lines"]}


async def test_free_first_month_no_refund_and_one_extra_month_when_shut_down(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    keyring = KeyRing(tmp_path / "keys")
    keyring.generate(at("2026-01-01T00:00"))
    harness = await make_harness(keys_dir=str(keyring.folder))
    clock = harness.clock
    clock.set(at("2026-03-05T09:00"))
    client_id, enrollment = await harness.add_client("Acme Dental", ttl_days=365)
    admin = await harness.api_token("admin", name="noc")
    billing_token = (await harness.api_token("billing", name="billing-job"))["Authorization"][7:]
    (tmp_path / "prices.toml").write_text(
        f'[[client]]\nid = "{client_id}"\nname = "Acme Dental"\ncurrency = "USD"\n'
        '  [[client.price]]\n  from = "2026-01-01"\n  pc = "45.00"\n  server = "120.00"\n'
    )

    steady = await harness.enroll(enrollment, "hw-steady", kind="pc")
    leaving = await harness.enroll(enrollment, "hw-leaving", kind="pc")
    shut_down = await harness.enroll(enrollment, "hw-shut-down", kind="pc")

    async def beat(*agents: dict[str, Any]) -> None:
        for agent in agents:
            await harness.heartbeat(agent["agent_token"])
        await harness.flush()

    clock.set(at("2026-03-31T23:00"))
    await beat(steady, leaving, shut_down)
    clock.set(at("2026-04-07T10:00"))  # the seed's 7th: one comes online, one leaves, one goes dark
    newcomer = await harness.enroll(enrollment, "hw-new-server", kind="server")
    await beat(steady, leaving, shut_down)
    resp = await harness.client.post(
        f"/v1/machines/{leaving['machine_id']}/offboard", json={"reason": "returned"}, headers=admin
    )
    command_id = (await resp.json())["command_id"]
    assert (await harness.heartbeat(leaving["agent_token"]))["commands"]
    done = await harness.client.post(
        f"/v1/commands/{command_id}/result",
        json={"status": "succeeded", "steps": []},
        headers={"Authorization": f"Bearer {leaving['agent_token']}"},
    )
    assert (await done.json())["state"] == "offboarded"
    clock.set(at("2026-04-30T22:00"))
    await beat(steady, newcomer)
    clock.set(at("2026-05-09T08:00"))  # billing runs on the 9th
    await beat(steady, newcomer)

    april = await bill(harness, "2026-04", billing_token, tmp_path)
    may = await bill(harness, "2026-05", billing_token, tmp_path)
    # April 1: steady, leaving and shut-down are billed; the server of the 7th is not yet.
    assert lines(april) == {"pc": (3, "135.00")}
    # May 1: leaving was offboarded (no refund for April, gone now); shut-down is billed once
    # more (dark since April 7, it expires on May 7); the newcomer's free month is over.
    assert lines(may) == {"pc": (2, "90.00"), "server": (1, "120.00")}
    billed_in_may = {m["hostname"] for m in may["invoices"][0]["machines"]}
    assert billed_in_may == {"host-hw-steady", "host-hw-shut-down", "host-hw-new-server"}
