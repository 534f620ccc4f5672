"""Tokens limited to clients: a technician of one client sees and offboards only its machines.

The red-team review queued offboards for all 205 machines of every client with one technician
token in 0.4 s. A token can now be limited (`token add --client NAME`, repeatable); what lies
outside its clients answers as if it did not exist.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from collector.tokens import hash_token, new_token
from tests.collector.conftest import Harness
from tests.collector.test_offboarding import offboard
from tests.support.processes import BIN, collector_cli


async def scoped_token(harness: Harness, role: str, *client_ids: str) -> dict[str, str]:
    token = new_token("api")
    await harness.store.add_api_token(
        f"{role}-scoped",
        role,  # type: ignore[arg-type]
        hash_token(token),
        now=harness.clock.now(),
        actor="test",
        clients=client_ids,
    )
    return {"Authorization": f"Bearer {token}"}


async def two_clients(fleet: Harness) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    acme_id, acme = await fleet.add_client("Acme")
    globex_id, globex = await fleet.add_client("Globex")
    return (
        acme_id,
        await fleet.enroll(acme, "hw-acme"),
        globex_id,
        await fleet.enroll(globex, "hw-globex"),
    )


async def test_a_scoped_technician_sees_and_offboards_only_its_clients_machines(
    fleet: Harness,
) -> None:
    acme_id, acme_pc, _, globex_pc = await two_clients(fleet)
    tina = await scoped_token(fleet, "technician", acme_id)

    listed = await fleet.get("/v1/machines", tina)
    assert [m["machine_id"] for m in listed["machines"]] == [acme_pc["machine_id"]]
    await fleet.get(f"/v1/machines/{globex_pc['machine_id']}", tina, status=404)
    await fleet.get(f"/v1/machines/{globex_pc['machine_id']}/events", tina, status=404)
    clients = await fleet.get("/v1/clients", tina)
    assert [c["name"] for c in clients["clients"]] == ["Acme"]

    admin = await fleet.api_token("admin")
    refused = await offboard(fleet, globex_pc["machine_id"], tina, status=404)
    assert refused["error"] == "machine_not_found"
    assert (await fleet.get("/v1/commands", admin))["commands"] == []
    mine = await offboard(fleet, acme_pc["machine_id"], tina)
    await fleet.get(f"/v1/commands/{mine['command_id']}", tina)

    theirs = await offboard(fleet, globex_pc["machine_id"], admin)
    await fleet.get(f"/v1/commands/{theirs['command_id']}", tina, status=404)
    commands = await fleet.get("/v1/commands", tina)
    assert [c["command_id"] for c in commands["commands"]] == [mine["command_id"]]


async def test_a_scoped_token_cannot_bulk_offboard_or_approve_another_client(
    fleet: Harness,
) -> None:
    acme_id, _, globex_id, globex_pc = await two_clients(fleet)
    tina = await scoped_token(fleet, "technician", acme_id)
    resp = await fleet.client.post(
        f"/v1/clients/{globex_id}/offboard", json={"reason": "not mine"}, headers=tina
    )
    assert resp.status == 404
    admin = await fleet.api_token("admin")
    theirs = await offboard(fleet, globex_pc["machine_id"], admin)
    resp = await fleet.client.post(
        f"/v1/commands/{theirs['command_id']}/approvals",
        json={"key_id": "k", "signature": "s"},
        headers=tina,
    )
    assert resp.status == 404
    resp = await fleet.client.post(
        f"/v1/machines/{globex_pc['machine_id']}/approve-reenroll", headers=tina
    )
    assert resp.status == 404


async def test_a_scoped_token_reads_no_whole_fleet_inventory(fleet: Harness) -> None:
    acme_id, *_ = await two_clients(fleet)
    billing = await scoped_token(fleet, "billing", acme_id)
    answer = await fleet.get("/v1/inventory", billing, status=403)
    assert answer["error"] == "forbidden"


def test_token_add_limits_a_token_to_named_clients_and_never_an_admin(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    collector_cli("client", "add", "Acme", db=db)
    collector_cli("client", "add", "Globex", db=db)
    added = collector_cli(
        "token",
        "add",
        "tina",
        "--role",
        "technician",
        "--client",
        "Acme",
        "--client",
        "Globex",
        db=db,
    )
    assert added["clients"] == ["Acme", "Globex"]
    listed = collector_cli("token", "list", db=db)["tokens"]  # type: ignore[index]
    assert len(listed[0]["clients"]) == 2
    for extra, message in (
        (["--role", "admin", "--client", "Acme"], "every client"),
        (["--role", "viewer", "--client", "Nobody"], "no client named"),
    ):
        out = subprocess.run(
            [str(BIN / "rmm-collector"), "token", "add", "x", *extra, "--db", db],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and message in out.stderr, out.stderr


async def test_a_scoped_token_reads_no_other_clients_devices_or_coverage(fleet: Harness) -> None:
    acme_id, _, globex_id, globex_pc = await two_clients(fleet)
    tina = await scoped_token(fleet, "technician", acme_id)
    await fleet.get(f"/v1/clients/{acme_id}/unmanaged", tina)
    await fleet.get(f"/v1/clients/{globex_id}/unmanaged", tina, status=404)
    await fleet.get(f"/v1/clients/{globex_id}/coverage?month=2026-03", tina, status=404)
    await fleet.get(f"/v1/machines/{globex_pc['machine_id']}/clones", tina, status=404)
