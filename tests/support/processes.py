"""Real collector processes for tests that need the CLI, signals or crashes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def collector_cli(*args: str, db: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run `rmm-collector ARGS --json --db DB` and return its JSON output."""
    out = subprocess.run(
        [str(BIN / "rmm-collector"), *args, "--json", "--db", db],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def start_collector(
    db: str, port: int, env: dict[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "rmm-collector"), "serve", "--db", db, "--port", str(port)],
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("collector did not become ready")
