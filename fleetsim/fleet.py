"""Virtual agents: who they are, how they are saved, what their heartbeats say."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec

from wire.messages import Component, HeartbeatRequest, Kind


class FleetError(Exception):
    """The simulator cannot do what was asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class VirtualAgent:
    hardware_id: str
    hostname: str
    kind: Kind
    agent_id: str
    machine_id: str
    token: str


def hardware_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index:07d}"


def kind_of(index: int) -> Kind:
    """One machine in ten is a server, as in a typical small-business fleet."""
    return "server" if index % 10 == 0 else "pc"


def save_agents(path: Path, agents: Iterable[VirtualAgent]) -> int:
    """Write one JSON object per line; the file holds agent tokens, so it is mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    with os.fdopen(fd, "w") as handle:
        for agent in agents:
            handle.write(json.dumps(asdict(agent), separators=(",", ":")) + "\n")
            count += 1
    return count


def load_agents(path: Path) -> list[VirtualAgent]:
    agents = []
    try:
        with path.open() as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    agents.append(VirtualAgent(**json.loads(line)))
                except (TypeError, ValueError) as exc:
                    raise FleetError(f"{path}:{number}: not a virtual agent ({exc})") from exc
    except OSError as exc:
        raise FleetError(f"cannot read the agents file: {exc}") from exc
    if not agents:
        raise FleetError(f"{path} lists no agents")
    return agents


_VERSIONS = {"rmm": "0.1.0", "antivirus": "4.18.24090", "dns_protection": "2.7.1", "backup": "11.5"}


def components(index: int, rng: random.Random | None = None, flip: float = 0.0) -> list[Component]:
    """What an agent reports: every component running, except a `flip` share stopped at random
    (a stopped component is a change of facts the collector records)."""
    chosen = ["rmm", "antivirus", "dns_protection"] + (["backup"] if index % 3 == 0 else [])
    reported = []
    for name in chosen:
        stopped = rng is not None and flip > 0 and name != "rmm" and rng.random() < flip
        reported.append(
            Component(
                name=name,
                status="stopped" if stopped else "running",
                version=_VERSIONS[name],
                required=name != "backup",
            )
        )
    return reported


class HeartbeatBodies:
    """Encoded heartbeat bodies, one per agent, in the wire format the agent sends."""

    def __init__(self, agents: Sequence[VirtualAgent], key_ids: list[str] | None) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._key_ids = key_ids
        self._steady = [self._body(a, i, components(i)) for i, a in enumerate(agents)]

    def _body(self, agent: VirtualAgent, index: int, reported: list[Component]) -> bytes:
        return self._encode(
            HeartbeatRequest(
                components=reported,
                hostname=agent.hostname,
                os="Windows 11 Pro 23H2" if agent.kind == "pc" else "Windows Server 2022",
                kind=agent.kind,
                key_ids=self._key_ids,
            )
        )

    def steady(self, index: int) -> bytes:
        return self._steady[index]

    def changed(self, agent: VirtualAgent, index: int, rng: random.Random, flip: float) -> bytes:
        return self._body(agent, index, components(index, rng, flip))
