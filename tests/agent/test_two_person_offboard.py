"""Two-person offboarding on a real agent process. The collector here is a stand-in
(`fake_collector.py`) playing an attacker who owns the real collector: its command-signing key, its
database and admin rights, so it can forge orders and register any operator key. It can deliver
perfectly signed commands, yet nothing runs without two distinct operator keys pinned in the
agent's own config; the requester plus a second operator do succeed, each step once."""

from __future__ import annotations

import asyncio
import base64
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.agent.conftest import Agent, StandIn, unique_name, until
from tests.agent.fake_collector import FakeCollector, Reply
from tests.agent.test_crash_recovery import slow_uninstaller
from tests.agent.test_offboarding_end_to_end import installed_daemon
from wire.orders import OffboardOrder, encode_order, order_digest, sign_order
from wire.signing import CommandPayload, key_id_for, pin_line, sign_command
from wire.times import format_instant

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

COLLECTOR_KEY = Ed25519PrivateKey.generate()  # stolen with the collector
ALICE = Ed25519PrivateKey.generate()  # the requester, pinned on the agent
BOB = Ed25519PrivateKey.generate()  # a second operator, pinned on the agent
MALLORY = Ed25519PrivateKey.generate()  # registered on the collector by the attacker only

MakeAgent = Callable[..., Agent]


def delivery(
    sequence: int, signers: list[Ed25519PrivateKey], *, components: list[str]
) -> dict[str, Any]:
    """A command as a collector delivers it: order, approvals, the collector's signature."""
    now = datetime.now(UTC)
    command_id = f"cmd-{sequence}-{uuid.uuid4().hex[:6]}"
    order = encode_order(
        OffboardOrder(
            order_id=f"order-{sequence}",
            command_id=command_id,
            type="offboard",
            agent_id="agent-1",
            machine_id="machine-1",
            client_id="client-1",
            hostname="host-agent0",
            requester="alice",
            reason="contract ended",
            ticket=None,
            components=components,
            issued_at=format_instant(now),
            not_after=format_instant(now + timedelta(days=7)),
        )
    )
    payload = CommandPayload(
        command_id=command_id,
        type="offboard",
        agent_id="agent-1",
        machine_id="machine-1",
        client_id="client-1",
        issuer="alice",
        reason="contract ended",
        sequence=sequence,
        issued_at=format_instant(now),
        expires_at=format_instant(now + timedelta(minutes=10)),
        key_id=key_id_for(COLLECTOR_KEY.public_key()),
        order_sha256=order_digest(order),
    )
    envelope = msgspec.structs.replace(
        sign_command(payload, COLLECTOR_KEY),
        order=base64.b64encode(order).decode(),
        approvals=[sign_order(order, signer) for signer in signers],
    )
    return msgspec.to_builtins(envelope)  # type: ignore[no-any-return]


def uninstall_step(tmp_path: Path, name: str, journal: Path, seconds: float = 0) -> list[str]:
    script = tmp_path / f"uninstall-{name}.py"
    script.write_text(
        "import time\n"
        f"open({str(journal)!r}, 'a').write({name!r} + '\\n')\n"
        f"time.sleep({seconds})\n"
        "print('removed', flush=True)\n"
    )
    return [sys.executable, str(script)]


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeCollector, str]:
    collector = FakeCollector()
    collector.heartbeat_s = 1
    collector.defaults["/v1/heartbeat"] = Reply(200, {"next_heartbeat_s": 1, "commands": []})
    server = await aiohttp_server(collector.app())
    return collector, str(server.make_url("")).rstrip("/")


async def test_an_attacker_who_owns_the_collector_cannot_uninstall_anything(
    fake: tuple[FakeCollector, str],
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    stand_in: Callable[[str], StandIn],
    tmp_path: Path,
) -> None:
    collector, url = fake
    antivirus = installed_daemon()
    backup = stand_in(unique_name("bkd")).start()
    journal = tmp_path / "journal"
    backup_journal = tmp_path / "backup-journal"
    agent = make_agent(
        url,
        enrollment_token="rmmen_token",
        command_keys=[pin_line(COLLECTOR_KEY.public_key())],
        operator_keys=[pin_line(ALICE.public_key()), pin_line(BOB.public_key())],
        components=[
            {
                "name": "antivirus",
                "processes": [antivirus.name],
                "uninstall": [slow_uninstaller(tmp_path, antivirus, journal, seconds=2)],
            },
            {
                "name": "backup",
                "processes": [backup.name],
                "uninstall": [uninstall_step(tmp_path, "backup", backup_journal)],
            },
        ],
    )
    agent.start()
    beats = await until(
        lambda: collector.to("/v1/heartbeat"), within=20, what="a heartbeat", on_timeout=agent.log
    )
    first = beats[0].json()
    assert first["offboard_approvals"] == 2
    assert first["operator_key_ids"] == [
        key_id_for(ALICE.public_key()),
        key_id_for(BOB.public_key()),
    ]
    assert first["agent_time"].endswith("Z")

    forgeries = {
        "one signature": delivery(1, [ALICE], components=["antivirus", "backup", "rmm"]),
        "the same key twice": delivery(2, [ALICE, ALICE], components=["antivirus", "rmm"]),
        "a key only the collector knows": delivery(3, [ALICE, MALLORY], components=["antivirus"]),
    }
    collector.pending = list(forgeries.values())
    for name, forged in forgeries.items():
        (refusal, *_) = await until(
            lambda f=forged: collector.results(f["command_id"]),  # type: ignore[misc]
            within=20,
            what=f"the refusal of {name}",
            on_timeout=agent.log,
        )
        assert refusal["status"] == "rejected", name
        assert refusal["reason"].startswith("insufficient_approvals"), refusal
    await asyncio.sleep(2.5)  # several more heartbeats, each re-delivering the forgeries
    assert not journal.exists() and not backup_journal.exists()  # not one step ran
    for forged in forgeries.values():  # each forgery was reported once, not every heartbeat
        assert len(collector.results(forged["command_id"])) == 1

    genuine = delivery(4, [ALICE, BOB], components=["antivirus", "rmm"])
    collector.pending = [genuine]
    beats_before = len(collector.to("/v1/heartbeat"))
    (result,) = await until(
        lambda: [r for r in collector.results(genuine["command_id"]) if r["status"] != "rejected"],
        within=30,
        what="the genuine offboard's result",
        on_timeout=agent.log,
    )
    assert result["status"] == "succeeded", result
    assert [line.split()[0] for line in journal.read_text().splitlines()] == ["start", "end"]
    assert not backup_journal.exists()  # the order did not name it
    ((step),) = result["steps"]
    assert step["component"] == "antivirus" and step["status"] == "ok"
    assert "purged" in step["output_tail"]
    # The 2-second step did not stop the heartbeats, and its progress was posted:
    assert len(collector.to("/v1/heartbeat")) - beats_before >= 2
    progress = [r.json() for r in collector.to(f"/v1/commands/{genuine['command_id']}/progress")]
    assert any(p["running"] and p["running"]["component"] == "antivirus" for p in progress)
    assert progress[-1]["running"] is None and progress[-1]["steps"]
    assert agent.process is not None
    await until(
        lambda: agent.process.poll() is not None, within=15, what="exit", on_timeout=agent.log
    )  # type: ignore[union-attr]
    assert agent.process.returncode == 0
    backup.kill()


async def test_an_order_naming_a_component_the_catalogue_lacks_reports_a_failed_step(
    fake: tuple[FakeCollector, str],
    make_agent: MakeAgent,
    tmp_path: Path,
) -> None:
    collector, url = fake
    agent = make_agent(
        url,
        enrollment_token="rmmen_token",
        command_keys=[pin_line(COLLECTOR_KEY.public_key())],
        operator_keys=[pin_line(ALICE.public_key()), pin_line(BOB.public_key())],
        components=[{"name": "antivirus", "processes": [unique_name("absent")]}],
    )
    agent.start()
    await until(
        lambda: collector.to("/v1/heartbeat"), within=20, what="a heartbeat", on_timeout=agent.log
    )
    command = delivery(1, [BOB, ALICE], components=["antivirus", "edr", "rmm"])
    collector.pending = [command]
    (result,) = await until(
        lambda: collector.results(command["command_id"]),
        within=20,
        what="a result",
        on_timeout=agent.log,
    )
    assert result["status"] == "failed" and result["reason"] == "not removed: edr"
    steps = {s["component"]: s for s in result["steps"]}
    assert steps["antivirus"]["status"] == "skipped"
    assert steps["edr"]["status"] == "failed" and "catalogue" in steps["edr"]["output_tail"]
    assert agent.process is not None and agent.process.poll() is None  # not departed


async def test_without_pinned_operator_keys_every_offboard_is_refused(
    fake: tuple[FakeCollector, str], make_agent: MakeAgent
) -> None:
    collector, url = fake
    agent = make_agent(
        url,
        enrollment_token="rmmen_token",
        command_keys=[pin_line(COLLECTOR_KEY.public_key())],
        components=[{"name": "antivirus", "processes": ["x"], "uninstall": [["false"]]}],
    )
    agent.start()
    command = delivery(1, [ALICE, BOB], components=["antivirus"])
    collector.pending = [command]
    (refusal,) = await until(
        lambda: collector.results(command["command_id"]),
        within=20,
        what="a refusal",
        on_timeout=agent.log,
    )
    assert refusal["status"] == "rejected"
    assert "no operator keys are pinned" in refusal["reason"]
    assert "every offboard will be refused" in agent.log()


async def test_an_order_is_not_needed_only_where_the_config_says_offboard_approvals_0(
    fake: tuple[FakeCollector, str], make_agent: MakeAgent
) -> None:
    collector, url = fake
    agent = make_agent(
        url,
        enrollment_token="rmmen_token",
        command_keys=[pin_line(COLLECTOR_KEY.public_key())],
        offboard_approvals=0,
        components=[{"name": "antivirus", "processes": [unique_name("gone")]}],
    )
    agent.start()
    bound = delivery(1, [], components=["antivirus"])
    tampered = dict(bound, order=base64.b64encode(b'{"other": "order"}').decode())
    collector.pending = [tampered]
    (refusal,) = await until(
        lambda: collector.results(bound["command_id"]),
        within=20,
        what="a refusal",
        on_timeout=agent.log,
    )
    assert refusal["reason"].startswith("order_digest_mismatch")
    assert "offboard_approvals = 0" in agent.log()
    collector.pending = [bound]  # the collector signature alone, the order still bound
    await until(
        lambda: any(r["status"] == "succeeded" for r in collector.results(bound["command_id"])),
        within=20,
        what="the single-signature offboard",
        on_timeout=agent.log,
    )
    assert agent.process is not None
    await until(
        lambda: agent.process.poll() is not None, within=15, what="exit", on_timeout=agent.log
    )  # type: ignore[union-attr]
    assert agent.process.returncode == 0


__all__ = ["installed_daemon"]
