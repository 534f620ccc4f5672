"""The service loop in-process against a scripted collector: retries, 401, 4xx, spool, commands."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from agent.client import CollectorClient
from agent.config import parse_config
from agent.enrolling import AgentError
from agent.events import new_event
from agent.identity import Identity
from agent.network import NetworkWatcher
from agent.probes import Prober
from agent.service import Agent, Stopping
from agent.spool import Spool
from agent.state import Credential, StateStore
from tests.agent.fake_collector import FakeCollector, Reply
from tests.agent.test_probes import FakeProcess, FakePsutil, FakeServices, NoVersions
from wire.clock import SystemClock
from wire.messages import NetworkInfo, NetworkNeighbor, SignedCommand

TOKEN = "rmmag_secret-token-value"
ServerFactory = Callable[..., Awaitable[TestServer]]
IDENTITY = Identity(hardware_id="hw-1", hostname="till-1", os="Linux", kind="pc")


class Harness:
    def __init__(self, tmp_path: Path, url: str, collector: FakeCollector) -> None:
        self.collector = collector
        self.config = parse_config(
            {
                "collector_url": url,
                "enrollment_token": "rmmen_enroll-token",
                "state_dir": str(tmp_path / "state"),
                "retry_max_s": 5,
                "component": [
                    {"name": "antivirus", "processes": ["clamd"]},
                    {"name": "backup", "processes": ["bkpd"], "required": False},
                ],
            },
            source=tmp_path / "agent.toml",
        )
        self.state = StateStore(self.config.state_dir)
        self.spool = Spool(self.config.state_dir, max_events=self.config.spool_max_events)
        self.ps = FakePsutil([FakeProcess(812, "clamd")])
        self.slept: list[float] = []
        self.commands: list[list[str]] = []
        self.limit = 1
        self.probes = 0
        self.agent_options: dict[str, Any] = {}

    def enrolled(self) -> Harness:
        self.state.prepare()
        self.state.save_credential(
            Credential(
                agent_id="agent-1",
                agent_token=TOKEN,
                machine_id="machine-1",
                collector_url=self.config.collector_url,
                hardware_id="hw-1",
                enrolled_at=datetime(2026, 3, 1, tzinfo=UTC),
                heartbeat_interval_s=60,
            )
        )
        return self

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) >= self.limit:
            raise Stopping

    async def on_commands(self, commands: Sequence[SignedCommand]) -> None:
        self.commands.append([c.command_id for c in commands])

    async def run(self, *, sleeps: int = 1, hook: bool = True) -> Agent:
        self.limit = sleeps
        prober = Prober(
            self.config.components,
            ps=self.ps,
            services=FakeServices({}),
            versions=NoVersions(),
            system="Linux",
        )
        original = prober.sample

        def counting(**kwargs: Any) -> Any:
            self.probes += 1
            return original(**kwargs)

        prober.sample = counting  # type: ignore[method-assign]
        async with CollectorClient(self.config.collector_url) as client:
            extra: dict[str, Any] = {"on_commands": self.on_commands} if hook else {}
            extra.update(self.agent_options)
            agent = Agent(
                self.config,
                client=client,
                state=self.state,
                spool=self.spool,
                prober=prober,
                identity=IDENTITY,
                clock=SystemClock(),
                rng=random.Random(7),
                sleep=self.sleep,
                **extra,
            )
            with pytest.raises(Stopping):
                await agent.run()
        return agent


@pytest.fixture
async def harness(aiohttp_server: ServerFactory, tmp_path: Path) -> Harness:
    collector = FakeCollector()
    server = await aiohttp_server(collector.app())
    return Harness(tmp_path, str(server.make_url("")).rstrip("/"), collector)


def event_types(collector: FakeCollector) -> list[str]:
    return [e["type"] for r in collector.to("/v1/events") for e in r.json()["events"]]


async def test_a_cycle_reports_the_agent_itself_and_every_component(harness: Harness) -> None:
    await harness.enrolled().run()
    (beat,) = harness.collector.to("/v1/heartbeat")
    body = beat.json()
    components = {c["name"]: c for c in body["components"]}
    assert components["rmm"]["status"] == "running"
    assert components["rmm"]["version"]
    assert components["antivirus"] == {
        "name": "antivirus",
        "status": "running",
        "version": None,
        "required": True,
    }
    assert components["backup"]["status"] == "missing"
    assert components["backup"]["required"] is False
    assert body["hostname"] == "till-1"
    assert body["kind"] == "pc"
    assert body["key_ids"] == []
    assert event_types(harness.collector) == [
        "agent.started",
        "component.changed",
        "component.changed",
    ]
    # The next cycle comes after the collector's interval plus up to 10% jitter.
    assert 60 <= harness.slept[-1] <= 66


async def test_transport_errors_retry_the_whole_cycle_with_fresh_probes(harness: Harness) -> None:
    harness.collector.script(
        "/v1/heartbeat",
        Reply(500, {"error": "x", "detail": "y"}),
        Reply(503, raw=b""),
    )
    await harness.enrolled().run(sleeps=3)
    assert len(harness.collector.to("/v1/heartbeat")) == 3
    assert harness.probes == 3
    backoffs, interval = harness.slept[:2], harness.slept[2]
    assert all(0 <= s <= 5 for s in backoffs)
    assert 60 <= interval <= 66


async def test_a_401_backs_off_with_jitter_up_to_the_cap_and_never_re_enrolls(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.collector.script(
        "/v1/heartbeat",
        Reply(401, {"error": "invalid_token", "detail": "the agent token was revoked"}),
        Reply(401, {"error": "invalid_token", "detail": "the agent token was revoked"}),
    )
    with caplog.at_level(logging.INFO):
        await harness.enrolled().run(sleeps=2)
    # Between half the cap and the cap, and not the same twice: a fleet-wide 401 (e.g. after a
    # database restore) does not come back in lockstep.
    assert all(2.5 <= s <= 5 for s in harness.slept) and len(set(harness.slept)) == 2
    assert harness.collector.to("/v1/enroll") == []
    assert harness.state.load_credential() is not None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("REFUSED THIS AGENT'S TOKEN" in r.getMessage() for r in errors)
    assert "401" in (harness.state.load_status().last_error or "")
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_another_4xx_waits_a_normal_interval_without_retrying(harness: Harness) -> None:
    harness.collector.script(
        "/v1/heartbeat", Reply(400, {"error": "invalid_body", "detail": "bad"})
    )
    await harness.enrolled().run(sleeps=1)
    assert len(harness.collector.to("/v1/heartbeat")) == 1
    assert 60 <= harness.slept[0] <= 66


async def test_commands_go_to_the_hook_and_are_otherwise_only_logged_by_id(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    command = {
        "command_id": "cmd-7",
        "key_id": "k1",
        "payload": "eyJ4IjoxfQ==",
        "signature": "c2ln",
    }
    harness.collector.script(
        "/v1/heartbeat",
        Reply(200, {"next_heartbeat_s": 30, "commands": [command]}),
        Reply(200, {"next_heartbeat_s": 30, "commands": [command]}),
    )
    await harness.enrolled().run(sleeps=1)
    assert harness.commands == [["cmd-7"]]
    assert 30 <= harness.slept[0] <= 33

    harness.collector.script(
        "/v1/heartbeat",
        Reply(200, {"next_heartbeat_s": 30, "commands": [command]}),
        Reply(200, {"next_heartbeat_s": 30, "commands": [command]}),
    )
    harness.slept.clear()
    with caplog.at_level(logging.INFO):
        await harness.run(sleeps=2, hook=False)
    lines = [r.getMessage() for r in caplog.records if "cmd-7" in r.getMessage()]
    assert len(lines) == 1  # re-deliveries of the same command are not logged again
    assert "eyJ4IjoxfQ==" not in lines[0] and "c2ln" not in lines[0]
    assert harness.collector.to("/v1/commands/cmd-7/result") == []


async def test_the_spool_goes_out_in_order_in_batches_of_at_most_500(harness: Harness) -> None:
    harness.enrolled()
    clock = SystemClock()
    for n in range(1100):
        harness.spool.put_event(new_event("probe.failed", {"n": n}, clock=clock))
    harness.spool.put_result("cmd-1", b'{"status":"succeeded","steps":[]}')
    harness.spool.put_event(new_event("probe.failed", {"n": 1100}, clock=clock))
    await harness.run(sleeps=1)
    batches = [r.json()["events"] for r in harness.collector.to("/v1/events")]
    assert all(len(batch) <= 500 for batch in batches)
    numbers = [e["detail"]["n"] for batch in batches for e in batch if "n" in e["detail"]]
    assert numbers == list(range(1101))
    paths = [r.path for r in harness.collector.received]
    result_at = paths.index("/v1/commands/cmd-1/result")
    assert paths[result_at - 1] == "/v1/events"  # the result went out between its neighbours
    (result,) = harness.collector.to("/v1/commands/cmd-1/result")
    assert json.loads(result.body) == {"status": "succeeded", "steps": []}
    assert harness.spool.counts().total == 0


async def test_the_spool_waits_while_the_events_endpoint_is_down(harness: Harness) -> None:
    harness.collector.script("/v1/events", Reply(503, raw=b""))
    await harness.enrolled().run(sleeps=1)
    assert harness.spool.counts().events == 3  # agent.started and two transitions, kept
    assert len(harness.collector.to("/v1/heartbeat")) == 1  # the heartbeat itself succeeded


async def test_refused_events_are_dropped_but_refused_results_are_kept(harness: Harness) -> None:
    harness.enrolled()
    harness.spool.put_result("cmd-9", b"{}")
    harness.collector.script("/v1/events", Reply(400, {"error": "invalid_body", "detail": "x"}))
    harness.collector.script(
        "/v1/commands/cmd-9/result", Reply(403, {"error": "forbidden", "detail": "not yours"})
    )
    await harness.run(sleeps=1)
    counts = harness.spool.counts()
    assert (counts.total, counts.rejected) == (0, 1)


async def test_an_agent_without_credential_enrolls_once_then_heartbeats(harness: Harness) -> None:
    await harness.run(sleeps=1)
    (enroll,) = harness.collector.to("/v1/enroll")
    assert enroll.json()["enrollment_token"] == "rmmen_enroll-token"
    assert "Authorization" not in enroll.headers
    credential = harness.state.load_credential()
    assert credential is not None and credential.agent_token == TOKEN
    (beat,) = harness.collector.to("/v1/heartbeat")
    assert beat.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_a_refused_enrollment_stops_the_agent(harness: Harness) -> None:
    harness.collector.script(
        "/v1/enroll", Reply(401, {"error": "invalid_enrollment_token", "detail": "unknown"})
    )
    with pytest.raises(AgentError, match="enrollment refused"):
        await harness.run(sleeps=1)
    assert harness.state.load_credential() is None


async def test_transitions_are_remembered_across_restarts(harness: Harness) -> None:
    await harness.enrolled().run(sleeps=1)
    first = event_types(harness.collector)
    harness.collector.received.clear()
    harness.slept.clear()
    await harness.run(sleeps=1)  # a restart: nothing changed, so only agent.started
    assert first.count("component.changed") == 2
    assert event_types(harness.collector) == ["agent.started"]
    harness.ps.processes.clear()
    harness.collector.received.clear()
    harness.slept.clear()
    await harness.run(sleeps=1)
    changes = [
        e["detail"]
        for r in harness.collector.to("/v1/events")
        for e in r.json()["events"]
        if e["type"] == "component.changed"
    ]
    assert changes == [
        {"name": "antivirus", "from": "running", "to": "missing", "version": None, "required": True}
    ]


async def test_a_failing_disk_costs_events_not_the_heartbeat(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(event: object) -> None:
        raise OSError(28, "No space left on device")

    harness.spool.put_event = disk_full  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        await harness.enrolled().run(sleeps=1)
    assert len(harness.collector.to("/v1/heartbeat")) == 1
    assert any("No space left" in r.getMessage() for r in caplog.records)


async def test_a_heartbeat_carries_the_agents_clock_version_users_and_offboard_policy(
    harness: Harness,
) -> None:
    harness.agent_options["users"] = lambda: ["alice", "bob"]
    await harness.enrolled().run()
    body = harness.collector.to("/v1/heartbeat")[0].json()
    assert body["agent_time"].endswith("Z") and body["agent_version"]
    assert body["users"] == ["alice", "bob"]
    assert body["offboard_approvals"] == 2 and body["operator_key_ids"] == []
    assert body["network"] is None  # not read yet: the first cycle never waits for it


async def test_the_network_section_rides_on_a_later_heartbeat(harness: Harness) -> None:
    section = NetworkInfo(
        macs=["52:54:00:12:34:56"],
        neighbors=[NetworkNeighbor(ip="10.0.0.1", mac="02:00:00:00:00:01")],
    )
    harness.agent_options["network"] = NetworkWatcher(lambda: section, clock=SystemClock())

    async def sleep(seconds: float) -> None:
        harness.slept.append(seconds)
        await asyncio.sleep(0.05)  # the background reading runs meanwhile
        if len(harness.slept) >= 3:
            raise Stopping

    harness.sleep = sleep  # type: ignore[method-assign]
    await harness.enrolled().run(sleeps=3)
    sections = [r.json()["network"] for r in harness.collector.to("/v1/heartbeat")]
    assert sections[0] is None
    assert sections[1] == msgspec.to_builtins(section)
    assert sections[2] is None  # acknowledged and unchanged: not sent again for 15 minutes


async def test_a_401_after_a_recorded_offboard_departs_instead_of_waiting(harness: Harness) -> None:
    harness.collector.script(
        "/v1/heartbeat",
        Reply(401, {"error": "invalid_token", "detail": "revoked after the final report"}),
    )
    departures: list[str] = []

    async def offboarded() -> bool:
        departures.append("departed")
        return True

    harness.agent_options["on_unauthorized"] = offboarded
    await harness.enrolled().run(sleeps=1)
    assert departures == ["departed"]
    assert harness.slept == [0]  # no back-off: the agent is leaving
