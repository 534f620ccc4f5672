"""Real processes for the agent's end-to-end tests: a collector, agents, and stand-in components.

Everything runs on loopback with free ports and files under pytest's tmp_path. The collector is told
to ask for a heartbeat every second, so a test sees a cycle within about a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]

COLLECTOR_ENV = {
    "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": "1",
    "RMM_COLLECTOR_FLUSH_INTERVAL_S": "0.2",
    "RMM_COLLECTOR_AUTH_CACHE_S": "0.2",
    "RMM_COLLECTOR_COMMAND_POLL_S": "0.2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    check: Callable[[], Any],
    *,
    timeout: float = 10.0,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy; fail the test with `what` on timeout.

    `on_timeout` adds context to the failure, e.g. the tail of the agent's log.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    context = f"\n{on_timeout()[-3000:]}" if on_timeout else ""
    pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {last!r}){context}")


async def until(
    check: Callable[[], Any],
    *,
    within: float,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """`wait_for` for async tests, whose event loop may be serving a stand-in collector."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.1)
    context = f"\n{on_timeout()[-3000:]}" if on_timeout else ""
    pytest.fail(f"timed out after {within:g} s waiting for {what}{context}")


@dataclass
class Collector:
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    admin_token: str = ""

    @property
    def db(self) -> str:
        return str(self.directory / "state.sqlite3")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> dict[str, Any]:
        out = subprocess.run(
            [str(BIN / "rmm-collector"), *args, "--json", "--db", self.db],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **COLLECTOR_ENV},
        )
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def start(self) -> None:
        log = open(self.directory / "collector.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(BIN / "rmm-collector"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db",
                self.db,
            ],
            env={**os.environ, **COLLECTOR_ENV},
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for(self._ready, timeout=20, what="the collector's /healthz")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"collector exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def enrollment_token(self, client: str | None = None) -> str:
        answer = self.cli("client", "add", client or f"client-{uuid.uuid4().hex[:8]}")
        return str(answer["enrollment_token"])

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def machine(self, machine_id: str) -> dict[str, Any]:
        return self.get(f"/v1/machines/{machine_id}")  # type: ignore[no-any-return]

    def components(self, machine_id: str) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.machine(machine_id)["components"]}

    def events(self, machine_id: str) -> list[dict[str, Any]]:
        return self.get(f"/v1/machines/{machine_id}/events?limit=5000")["events"]  # type: ignore[no-any-return]


@dataclass
class Agent:
    directory: Path
    config_path: Path
    hardware_id: str
    hostname: str
    process: subprocess.Popen[bytes] | None = None
    umask: int | None = None

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def log_path(self) -> Path:
        return self.directory / "agent.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RMM_AGENT_HARDWARE_ID": self.hardware_id,
            "RMM_AGENT_HOSTNAME": self.hostname,
        }

    def command(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=REPO,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115
        umask = self.umask
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "--config",
                str(self.config_path),
                "--log-level",
                "debug",
            ],
            env=self.env(),
            cwd=REPO,
            stdout=log,
            stderr=log,
            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
        )
        log.close()

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; returns how long the agent took to exit."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def status(self) -> dict[str, Any]:
        done = self.command("status", "--json")
        assert done.returncode in (0, 3), done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def known(self) -> dict[str, Any]:
        """The agent's status.json, read directly (cheaper than `rmm-agent status` for polling)."""
        try:
            return json.loads((self.state_dir / "status.json").read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def spooled_events(self) -> int:
        return len(list((self.state_dir / "spool").glob("*.event.json")))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def credential(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "credential.json").read_text())  # type: ignore[no-any-return]

    def spooled_event_ids(self) -> set[str]:
        ids = set()
        for path in (self.state_dir / "spool").glob("*.event.json"):
            ids.add(json.loads(path.read_text())["event_id"])
        return ids


def toml_config(values: dict[str, Any], components: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    def render(value: Any) -> str:
        return json.dumps(value)  # JSON strings, numbers, booleans and arrays are valid TOML

    lines = [f"{key} = {render(value)}" for key, value in values.items()]
    for component in components:
        lines.append("")
        lines.append("[[component]]")
        lines.extend(f"{key} = {render(value)}" for key, value in component.items())
    return "\n".join(lines) + "\n"


def _collector(directory: Path) -> Iterator[Collector]:
    directory.mkdir()
    server = Collector(directory)
    server.admin_token = str(server.cli("token", "add", "noc", "--role", "admin")["token"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """One collector shared by a module's tests; each test enrolls its own client and machines."""
    yield from _collector(tmp_path_factory.mktemp("shared") / "collector")


@pytest.fixture
def own_collector(tmp_path: Path) -> Iterator[Collector]:
    """A collector for one test alone, which it may stop and start again."""
    yield from _collector(tmp_path / "collector")


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(
        collector_url: str,
        *,
        enrollment_token: str | None = None,
        components: list[dict[str, Any]] | None = None,
        name: str | None = None,
        hardware_id: str | None = None,
        **settings: Any,
    ) -> Agent:
        name = name or f"agent{len(agents)}"
        directory = tmp_path / name
        directory.mkdir()
        values: dict[str, Any] = {"collector_url": collector_url, "state_dir": "state"}
        if enrollment_token is not None:
            values["enrollment_token"] = enrollment_token
        values.setdefault("retry_max_s", 1)
        values.update(settings)
        config = directory / "agent.toml"
        config.write_text(toml_config(values, components or []))
        config.chmod(0o600)
        agent = Agent(
            directory,
            config,
            hardware_id=hardware_id or uuid.uuid4().hex,
            hostname=f"host-{name}",
        )
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if agent.process is not None and agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()


@dataclass
class StandIn:
    """A process with a chosen name, standing in for a deployed component's daemon."""

    name: str
    path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> StandIn:
        self.process = subprocess.Popen(
            [str(self.path), "-c", "import time; time.sleep(600)"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def kill(self, *, reap: bool = True) -> None:
        assert self.process is not None
        self.process.kill()
        if reap:
            self.process.wait()


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Callable[[str], StandIn]]:
    """`stand_in("fake-avd")` is a Python interpreter whose process name is `fake-avd`."""
    made: list[StandIn] = []
    folder = tmp_path / "bin"
    folder.mkdir()
    interpreter = Path(os.path.realpath(sys.executable))

    def make(name: str) -> StandIn:
        link = folder / name
        link.symlink_to(interpreter)
        item = StandIn(name, link)
        made.append(item)
        return item

    yield make
    for item in made:
        if item.process is not None and item.process.poll() is None:
            item.process.kill()
            item.process.wait()


def unique_name(prefix: str) -> str:
    """Process names are matched machine-wide, so stand-ins get names no real program has."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


__all__ = [
    "Agent",
    "Collector",
    "StandIn",
    "free_port",
    "toml_config",
    "unique_name",
    "until",
    "wait_for",
]
