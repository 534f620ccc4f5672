"""Test vectors for signed commands on the agent: every forgery or mistake is refused, reported
as `rejected` with its reason, and nothing runs. Real Ed25519 keys, a real ledger file."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.commands import CommandHandler, Job
from agent.config import CommandKey
from agent.ledger import CommandLedger
from agent.state import Credential
from wire.messages import CommandResultRequest, SignedCommand
from wire.signing import CommandPayload, key_id_for, raw_public_key, sign_command
from wire.times import format_instant

NOW = datetime(2026, 3, 7, 14, 0, tzinfo=UTC)


class StoppedClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


CREDENTIAL = Credential(
    agent_id="agent-1",
    agent_token="secret",
    machine_id="machine-1",
    collector_url="https://noc.example.net",
    hardware_id="hw-1",
    enrolled_at=NOW,
    heartbeat_interval_s=60,
)
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def pin(key: Ed25519PrivateKey) -> CommandKey:
    return CommandKey(
        key_id=key_id_for(key.public_key()), public_key=raw_public_key(key.public_key())
    )


def payload(**changes: object) -> CommandPayload:
    fields: dict[str, object] = {
        "command_id": "cmd-1",
        "type": "offboard",
        "agent_id": "agent-1",
        "machine_id": "machine-1",
        "client_id": "client-1",
        "issuer": "tina",
        "reason": "laptop returned",
        "ticket": "T-1",
        "sequence": 1,
        "issued_at": format_instant(NOW),
        "expires_at": format_instant(NOW + timedelta(minutes=10)),
        "key_id": key_id_for(KEY.public_key()),
    }
    fields.update(changes)
    return CommandPayload(**fields)  # type: ignore[arg-type]


def signed(p: CommandPayload | None = None, key: Ed25519PrivateKey = KEY) -> SignedCommand:
    return sign_command(p or payload(), key)


@dataclass
class Agent:
    """The command handler wired to a recording executor and reporter."""

    state_dir: Path
    clock: StoppedClock = field(default_factory=lambda: StoppedClock(NOW))
    executed: list[str] = field(default_factory=list)
    reports: list[tuple[str, CommandResultRequest]] = field(default_factory=list)
    keys: tuple[CommandKey, ...] = (pin(KEY),)
    credential: Credential = CREDENTIAL
    departed: list[str] = field(default_factory=list)
    handler: CommandHandler = field(init=False)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        ledger = CommandLedger(self.state_dir)

        async def execute(job: Job) -> CommandResultRequest:
            # Recorded durably before the first step runs:
            assert job.command_id in (self.state_dir / "commands.json").read_text()
            self.executed.append(job.command_id)
            return CommandResultRequest(status="succeeded")

        async def report(command_id: str, result: CommandResultRequest) -> None:
            self.reports.append((command_id, result))

        async def depart(command_id: str) -> None:
            self.departed.append(command_id)

        self.handler = CommandHandler(
            ledger=ledger,
            keys=self.keys,
            credential=lambda: self.credential,
            clock=self.clock,
            execute=execute,
            report=report,
            on_offboarded=depart,
        )

    def refusal(self) -> str:
        ((_, result),) = self.reports
        assert result.status == "rejected"
        assert result.reason
        return result.reason.split(":")[0]


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


async def test_a_genuine_command_runs_once_and_is_recorded_in_a_private_file(agent: Agent) -> None:
    await agent.handler.handle(signed())
    assert agent.executed == ["cmd-1"]
    assert agent.reports[0][1].status == "succeeded"
    assert stat.S_IMODE(os.stat(agent.state_dir / "commands.json").st_mode) == 0o600


SIGNED_FIELDS = list(CommandPayload.__struct_fields__)


@pytest.mark.parametrize("field_name", SIGNED_FIELDS)
async def test_a_flipped_byte_in_any_signed_field_is_refused(agent: Agent, field_name: str) -> None:
    genuine = signed()
    data = bytearray(base64.b64decode(genuine.payload))
    start = data.index(f'"{field_name}":'.encode()) + len(field_name) + 3
    data[start + 1] ^= 0x01  # a byte inside the value (after a quote or a digit)
    tampered = msgspec.structs.replace(genuine, payload=base64.b64encode(bytes(data)).decode())
    await agent.handler.handle(tampered)
    assert agent.executed == []
    assert agent.refusal() in ("bad_signature", "malformed")


@pytest.mark.parametrize(
    "signature",
    [
        lambda s: base64.b64encode(bytes([base64.b64decode(s)[0] ^ 1]) + base64.b64decode(s)[1:]),
        lambda s: base64.b64encode(base64.b64decode(s)[:-1]),
        lambda s: b"",
        lambda s: b"not base64!",
    ],
    ids=["flipped", "truncated", "empty", "garbage"],
)
async def test_a_damaged_signature_is_refused(agent: Agent, signature: object) -> None:
    genuine = signed()
    damaged = signature(genuine.signature)  # type: ignore[operator]
    await agent.handler.handle(msgspec.structs.replace(genuine, signature=damaged.decode()))
    assert agent.executed == []
    assert agent.refusal() in ("bad_signature", "malformed")


async def test_a_command_signed_by_an_unknown_key_is_refused(agent: Agent) -> None:
    await agent.handler.handle(
        signed(payload(key_id=key_id_for(OTHER_KEY.public_key())), OTHER_KEY)
    )
    assert agent.executed == []
    assert agent.refusal() == "unknown_key"


async def test_an_envelope_naming_a_pinned_key_over_another_keys_signature_is_refused(
    agent: Agent,
) -> None:
    forged = signed(payload(key_id=key_id_for(OTHER_KEY.public_key())), OTHER_KEY)
    await agent.handler.handle(msgspec.structs.replace(forged, key_id=key_id_for(KEY.public_key())))
    assert agent.executed == []
    assert agent.refusal() == "bad_signature"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"machine_id": "machine-2"}, "wrong_machine"),
        ({"agent_id": "agent-2"}, "wrong_agent"),
        ({"type": "wipe_disk"}, "unknown_type"),
        (
            {
                "issued_at": format_instant(NOW - timedelta(minutes=30)),
                "expires_at": format_instant(NOW - timedelta(minutes=5, seconds=1)),
            },
            "expired",
        ),
        (
            {
                "issued_at": format_instant(NOW + timedelta(minutes=5, seconds=1)),
                "expires_at": format_instant(NOW + timedelta(minutes=15)),
            },
            "not_yet_valid",
        ),
        ({"expires_at": format_instant(NOW + timedelta(days=30))}, "lifetime_too_long"),
        ({"sequence": 10**9}, "implausible_sequence"),
    ],
    ids=[
        "other-machine",
        "other-agent",
        "unknown-type",
        "expired",
        "from-the-future",
        "lives-for-days",
        "sequence-jump-1e9",
    ],
)
async def test_a_genuinely_signed_but_unacceptable_command_is_refused(
    agent: Agent, changes: dict[str, object], reason: str
) -> None:
    await agent.handler.handle(signed(payload(**changes)))
    assert agent.executed == []
    assert agent.refusal() == reason


async def test_clock_skew_up_to_five_minutes_is_tolerated(agent: Agent) -> None:
    await agent.handler.handle(
        signed(
            payload(
                issued_at=format_instant(NOW + timedelta(minutes=4, seconds=59)),
                expires_at=format_instant(NOW + timedelta(minutes=14)),
            )
        )
    )
    assert agent.executed == ["cmd-1"]


async def test_a_replay_of_an_executed_command_is_ignored_also_after_a_restart(
    agent: Agent,
) -> None:
    await agent.handler.handle(signed())
    await agent.handler.handle(signed())
    agent.restart()
    agent.clock.moment = NOW + timedelta(minutes=1)
    await agent.handler.handle(
        signed(
            payload(
                issued_at=format_instant(NOW + timedelta(minutes=1)),
                expires_at=format_instant(NOW + timedelta(minutes=11)),
            )
        )
    )
    assert agent.executed == ["cmd-1"]
    assert [r.status for _, r in agent.reports] == ["succeeded"]


async def test_a_lower_sequence_is_refused(agent: Agent) -> None:
    await agent.handler.handle(signed(payload(command_id="cmd-5", sequence=5)))
    await agent.handler.handle(signed(payload(command_id="cmd-4", sequence=4)))
    assert agent.executed == ["cmd-5"]
    assert [(c, r.status) for c, r in agent.reports] == [
        ("cmd-5", "succeeded"),
        ("cmd-4", "rejected"),
    ]
    assert (agent.reports[1][1].reason or "").startswith("stale_sequence")


async def test_a_refused_forgery_does_not_poison_the_genuine_command_with_the_same_id(
    agent: Agent,
) -> None:
    forged = signed(payload(key_id=key_id_for(OTHER_KEY.public_key())), OTHER_KEY)
    await agent.handler.handle(msgspec.structs.replace(forged, key_id=key_id_for(KEY.public_key())))
    await agent.handler.handle(signed())
    assert agent.executed == ["cmd-1"]
    assert [r.status for _, r in agent.reports] == ["rejected", "succeeded"]


async def test_with_no_pinned_key_every_command_is_refused(tmp_path: Path) -> None:
    agent = Agent(tmp_path, keys=())
    await agent.handler.handle(signed())
    assert agent.executed == []
    assert agent.refusal() == "unknown_key"


async def test_an_interrupted_command_resumes_after_a_restart_without_a_second_acceptance(
    agent: Agent,
) -> None:
    ledger = CommandLedger(agent.state_dir)
    genuine = signed()
    ledger.accept(payload(), base64.b64decode(genuine.payload), NOW)  # then the agent died
    agent.restart()
    await agent.handler.resume()
    await agent.handler.handle(genuine)
    assert agent.executed == ["cmd-1"]
    await agent.handler.resume()
    assert agent.executed == ["cmd-1"]


async def test_two_different_forgeries_of_one_command_are_two_tamper_reports(
    agent: Agent,
) -> None:
    genuine = signed()
    data = bytearray(base64.b64decode(genuine.payload))
    data[data.index(b'"reason":') + 11] ^= 0x01
    flipped_signature = base64.b64encode(
        bytes([base64.b64decode(genuine.signature)[0] ^ 1])
        + base64.b64decode(genuine.signature)[1:]
    ).decode()
    await agent.handler.handle(msgspec.structs.replace(genuine, signature=flipped_signature))
    altered = msgspec.structs.replace(genuine, payload=base64.b64encode(bytes(data)).decode())
    await agent.handler.handle(altered)
    await agent.handler.handle(altered)  # the same forged bytes again: not a new tamper event
    assert [r.reason.split(":")[0] for _, r in agent.reports if r.reason] == [
        "bad_signature",
        "bad_signature",
    ]
    assert agent.executed == []


async def test_a_genuine_command_refused_on_every_redelivery_is_reported_every_15_minutes(
    agent: Agent,
) -> None:
    # The agent's clock is 10 minutes behind; the collector re-signs each re-delivery.
    def redelivery(minute: int) -> SignedCommand:
        issued = NOW + timedelta(minutes=10 + minute)
        return signed(
            payload(
                issued_at=format_instant(issued),
                expires_at=format_instant(issued + timedelta(minutes=10)),
            )
        )

    for minute in range(20):  # one heartbeat a minute
        agent.clock.moment = NOW + timedelta(minutes=minute)
        await agent.handler.handle(redelivery(minute))
    reports = [r for _, r in agent.reports]
    assert [r.status for r in reports] == ["rejected", "rejected"]
    first, second = reports
    assert first.reason and first.reason.startswith("not_yet_valid")
    assert f"agent time {format_instant(NOW)}" in first.reason and "-600 s" in first.reason
    assert first.suppressed is None and second.suppressed == 14
    assert agent.executed == []


async def test_a_damaged_ledger_refuses_every_command_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "commands.json").write_text("{ half a ledger")
    agent = Agent(tmp_path)
    await agent.handler.handle(signed())
    assert agent.executed == []
    assert agent.refusal() == "ledger_damaged"
    assert str(tmp_path / "commands.json") in (agent.reports[0][1].reason or "")
    assert (tmp_path / "commands.json").read_text() == "{ half a ledger"  # left for a person


async def test_every_good_ledger_write_is_kept_as_a_backup(agent: Agent) -> None:
    await agent.handler.handle(signed())
    ledger = agent.state_dir / "commands.json"
    assert (agent.state_dir / "commands.json.bak").read_bytes() == ledger.read_bytes()


async def test_a_machine_enrolled_again_is_offboarded_with_its_new_agents_sequence(
    agent: Agent,
) -> None:
    # The old agent had accepted sequence 7; the collector starts the new agent's sequence at 1.
    await agent.handler.handle(signed(payload(command_id="old-cmd", sequence=7)))
    agent.credential = msgspec.structs.replace(CREDENTIAL, agent_id="agent-2")
    agent.restart()
    await agent.handler.handle(signed(payload(command_id="new-cmd", agent_id="agent-2")))
    assert agent.executed == ["old-cmd", "new-cmd"]
    # ... while the old agent's sequences still only grow:
    agent.credential = CREDENTIAL
    await agent.handler.handle(signed(payload(command_id="replay", sequence=7)))
    assert agent.reports[-1][1].reason and agent.reports[-1][1].reason.startswith("stale_sequence")


async def test_a_succeeded_offboard_whose_departure_never_happened_departs_on_resume_or_a_401(
    tmp_path: Path,
) -> None:
    agent = Agent(tmp_path)
    ledger = CommandLedger(tmp_path)
    genuine = signed()
    ledger.accept(payload(), base64.b64decode(genuine.payload), NOW)
    ledger.finish("cmd-1", CommandResultRequest(status="succeeded"))  # then the agent died
    agent.restart()
    await agent.handler.resume()
    assert agent.departed == ["cmd-1"] and agent.executed == []
    assert await agent.handler.depart_if_offboarded() is True  # what a 401 triggers
    assert agent.departed == ["cmd-1", "cmd-1"]
    agent.credential = msgspec.structs.replace(CREDENTIAL, agent_id="agent-2")
    assert await agent.handler.depart_if_offboarded() is False  # another agent's offboard
