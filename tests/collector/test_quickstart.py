"""`make run`'s quickstart, as a newcomer meets it: every command it prints works pasted into a
shell as it is, in the order printed (the enrollment `curl` once failed with invalid_json)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path

from tests.support.processes import BIN, free_port


def banner_of(proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if selector.select(timeout=0.5):
            seen += os.read(fd, 65536)
            if b"remote approve" in seen and seen.endswith(b"\n"):
                return seen.decode()
    raise AssertionError("the quickstart printed no banner:\n" + seen.decode())


def test_every_command_the_quickstart_prints_works_pasted_into_sh(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RMM_COLLECTOR_PORT": str(port),
        "RMM_COLLECTOR_DB": str(tmp_path / "data" / "collector.sqlite3"),
    }
    proc = subprocess.Popen(
        [str(BIN / "rmm-collector"), "quickstart"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        banner = banner_of(proc)
        commands = [
            line.strip()[2:] for line in banner.splitlines() if line.strip().startswith("$ ")
        ]
        assert len(commands) == 6, banner
        outputs = []
        for command in commands:
            done = subprocess.run(
                ["sh", "-c", command],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                # A person types the passphrase at the prompt; the test hands it over.
                env={**os.environ, "RMM_OPERATOR_PASSPHRASE": "a long passphrase"},
                stdin=subprocess.DEVNULL,
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs.append(done)
        health, enrolled, machines, alice, bob, offboard = outputs
        assert bob.stdout.strip().splitlines()[-1] != alice.stdout.strip().splitlines()[-1]
        assert json.loads(health.stdout)["status"] == "ok"
        assert set(json.loads(enrolled.stdout)) >= {"agent_id", "agent_token", "machine_id"}
        assert [m["hostname"] for m in json.loads(machines.stdout)["machines"]] == ["demo-pc"]
        assert alice.stdout.strip().splitlines()[-1].startswith("ed25519-")
        assert (tmp_path / "bob.key").stat().st_mode & 0o777 == 0o600
        assert "requested: command" in offboard.stderr and "signed as requester" in offboard.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
