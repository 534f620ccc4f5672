"""One client's fleet in every state the overview shows, built through the real API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.collector.conftest import Harness

RUNNING: list[dict[str, Any]] = [
    {"name": "rmm", "status": "running", "version": "1.2"},
    {"name": "antivirus", "status": "running", "version": "4.1"},
    {"name": "dns_protection", "status": "running", "version": "2.0"},
    {"name": "backup", "status": "missing", "version": None, "required": False},
]
AV_STOPPED: list[dict[str, Any]] = [
    {"name": "rmm", "status": "running", "version": "1.2"},
    {"name": "antivirus", "status": "stopped", "version": "4.1"},
    {"name": "dns_protection", "status": "running", "version": "2.0"},
]


@dataclass
class Scenario:
    client_id: str
    other_client_id: str
    machines: dict[str, dict[str, Any]]
    pending_command: str
    failed_command: str


async def offboard(h: Harness, machine_id: str, headers: dict[str, str], reason: str) -> str:
    resp = await h.client.post(
        f"/v1/machines/{machine_id}/offboard", headers=headers, json={"reason": reason}
    )
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["command_id"])


async def build(h: Harness) -> Scenario:
    """Acme Dental: `ok` (online, covered), `gap` (online, anti-virus stopped), `stale` (offline 10
    days, still billed), `gone` (expired 31 days ago, never offboarded), `waiting` (offboard asked 2
    days ago, machine dark since), `broken` (offboard failed). Globex: no machines."""
    client_id, enrollment = await h.add_client("Acme Dental", ttl_days=90)
    other_id, _ = await h.add_client("Globex")
    tech = await h.api_token("technician", name="scenario-tech")
    m: dict[str, dict[str, Any]] = {}
    m["gone"] = await h.enroll(enrollment, "hw-gone", hostname="gone-dark", kind="server")
    h.clock.advance(days=21)
    m["stale"] = await h.enroll(enrollment, "hw-stale", hostname="stale-laptop")
    h.clock.advance(days=10)
    for name in ("ok", "gap", "waiting", "broken"):
        m[name] = await h.enroll(enrollment, f"hw-{name}", hostname=f"{name}-pc")
    await h.heartbeat(m["broken"]["agent_token"])
    pending = await offboard(h, m["waiting"]["machine_id"], tech, "laptop stolen")
    failed = await offboard(h, m["broken"]["machine_id"], tech, "client left")
    await h.heartbeat(m["broken"]["agent_token"])
    resp = await h.client.post(
        f"/v1/commands/{failed}/result",
        headers={"Authorization": f"Bearer {m['broken']['agent_token']}"},
        json={
            "status": "failed",
            "reason": "backup agent busy",
            "steps": [
                {
                    "component": "backup",
                    "argv": ["/opt/backup/uninstall"],
                    "status": "failed",
                    "exit_code": 3,
                    "output_tail": "service busy",
                }
            ],
        },
    )
    assert resp.status == 200, await resp.text()
    h.clock.advance(days=2)
    await h.heartbeat(m["ok"]["agent_token"], RUNNING)
    await h.heartbeat(m["gap"]["agent_token"], AV_STOPPED)
    await h.flush()
    return Scenario(client_id, other_id, m, pending, failed)
