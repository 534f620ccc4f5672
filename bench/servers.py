"""Server processes the benchmarks start on loopback, and what they cost while they run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers (405 for a GET on a POST-only route)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{url}: the server did not come up")


@dataclass
class Servers:
    procs: list[subprocess.Popen[bytes]]
    urls: list[str]
    _cpu: list[float] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        return total

    def rss_mib(self) -> list[float]:
        return [round(psutil.Process(p.pid).memory_info().rss / 2**20, 1) for p in self.procs]

    def peak_rss_mib(self) -> list[float]:
        """Each process's high-water mark (VmHWM) so far."""
        peaks = []
        for proc in self.procs:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
        return peaks

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_bare(count: int, log_dir: Path) -> Servers:
    procs, urls = [], []
    for i in range(count):
        port = free_port()
        log = (log_dir / f"bare-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.bare", "--port", str(port)],
                stdout=log,
                stderr=log,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    for proc, url in zip(procs, urls, strict=True):
        _wait_ready(proc, url + "/v1/heartbeat")
    return Servers(procs, urls)


def start_collectors(
    db: str,
    count: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
    tag: str = "collector",
) -> Servers:
    procs, urls = [], []
    environ = {
        **os.environ,
        "RMM_COLLECTOR_LOG_LEVEL": "WARNING",
        "RMM_COLLECTOR_KEYS_DIR": str(log_dir / "keys"),
        **(env or {}),
    }
    for i in range(count):
        port = free_port()
        log = (log_dir / f"{tag}-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [str(BIN / "rmm-collector"), "serve", "--db", db, "--port", str(port)],
                env=environ,
                stdout=log,
                stderr=log,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    for proc, url in zip(procs, urls, strict=True):
        _wait_ready(proc, url + "/healthz")
    return Servers(procs, urls)


def metric(url: str, name: str) -> float:
    """One unlabelled value from the collector's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0
