"""The agent's footprint: memory after start, CPU per probe-and-heartbeat cycle, and idleness.

Starts a real collector (heartbeats every second) and a real agent on loopback, then measures the
agent process from outside:

- RSS once the first heartbeat is acknowledged (target at most 30 MiB), and again after the run;
- CPU time per cycle (target at most 20 ms): the agent's own per-cycle figure (process CPU clock,
  all threads) and, from outside, the process CPU time spent across each cycle;
- CPU time between cycles, which should stay flat: nothing runs while the agent waits.

Outside measurements read `/proc/PID/task/*/schedstat` (nanoseconds, every thread) where it exists,
and psutil's coarser CPU times elsewhere. Run with `python -m bench.agent_footprint`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

RSS_TARGET_MIB = 30.0
CYCLE_CPU_TARGET_MS = 20.0
IDLE_CPU_TARGET_MS = 1.0
CYCLES = 8

_CYCLE_LINE = re.compile(r"heartbeat acknowledged: .* ([0-9.]+) ms CPU")
_BIN = Path(sys.executable).parent
_ROOT = Path(__file__).resolve().parents[1]


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="rmm-agent-bench-") as folder:
        results = _measure(Path(folder))
    _print(results)
    return results


def _measure(folder: Path) -> dict[str, object]:
    db = str(folder / "collector.sqlite3")
    env = {
        **os.environ,
        "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": "1",
        "RMM_COLLECTOR_FLUSH_INTERVAL_S": "0.5",
    }
    token = _collector_json(["client", "add", "bench", "--json", "--db", db], env)[
        "enrollment_token"
    ]
    port = _free_port()
    collector = subprocess.Popen(
        [
            str(_BIN / "rmm-collector"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            db,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent: subprocess.Popen[str] | None = None
    try:
        _wait_ready(f"http://127.0.0.1:{port}/healthz", collector)
        config = folder / "agent.toml"
        config.write_text(
            "\n".join(
                [
                    f'collector_url = "http://127.0.0.1:{port}"',
                    f'enrollment_token = "{token}"',
                    f'state_dir = "{folder / "state"}"',
                    "[[component]]",
                    'name = "antivirus"',
                    'processes = ["rmm-collector", "clamd", "MsMpEng.exe"]',
                    "[[component]]",
                    'name = "dns_protection"',
                    'processes = ["dnsfilter-agent"]',
                    "[[component]]",
                    'name = "backup"',
                    "required = false",
                    'processes = ["veeamservice"]',
                    "",
                ]
            )
        )
        config.chmod(0o600)
        agent_env = {
            **os.environ,
            "RMM_AGENT_HARDWARE_ID": "bench-hardware",
            "RMM_AGENT_HOSTNAME": "bench-host",
        }
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config), "--log-level", "debug"],
            env=agent_env,
            cwd=_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        return _observe(agent)
    finally:
        for process in (agent, collector):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _observe(agent: subprocess.Popen[str]) -> dict[str, object]:
    assert agent.stderr is not None
    lines: queue.Queue[float] = queue.Queue()
    reader = threading.Thread(target=_read_cycles, args=(agent.stderr, lines), daemon=True)
    reader.start()
    process = psutil.Process(agent.pid)

    self_reported = [lines.get(timeout=30)]  # the first cycle, which includes the enrollment
    rss_after_start = process.memory_info().rss
    outside_cycle: list[float] = []
    idle: list[float] = []
    for _ in range(CYCLES):
        time.sleep(0.15)
        quiet_start = _cpu_seconds(process)
        time.sleep(0.6)
        quiet_end = _cpu_seconds(process)
        idle.append(quiet_end - quiet_start)
        self_reported.append(lines.get(timeout=10))
        outside_cycle.append(_cpu_seconds(process) - quiet_end)
    rss_after_run = process.memory_info().rss
    steady = self_reported[1:]
    return {
        "rss_after_start_mib": round(rss_after_start / 2**20, 1),
        "rss_after_run_mib": round(rss_after_run / 2**20, 1),
        "rss_target_mib": RSS_TARGET_MIB,
        "first_cycle_cpu_ms": round(self_reported[0], 2),
        "cycle_cpu_ms_median": round(statistics.median(steady), 2),
        "cycle_cpu_ms_max": round(max(steady), 2),
        "cycle_cpu_ms_outside_median": round(statistics.median(outside_cycle) * 1000, 2),
        "cycle_cpu_target_ms": CYCLE_CPU_TARGET_MS,
        "idle_cpu_ms_per_0_6_s_max": round(max(idle) * 1000, 3),
        "idle_cpu_target_ms": IDLE_CPU_TARGET_MS,
        "threads": process.num_threads(),
        "cycles_measured": len(steady),
        "cpu_clock": "schedstat" if _has_schedstat(process.pid) else "psutil",
        "rss_ok": rss_after_start / 2**20 <= RSS_TARGET_MIB,
        "cycle_cpu_ok": statistics.median(outside_cycle) * 1000 <= CYCLE_CPU_TARGET_MS,
        "idle_ok": max(idle) * 1000 <= IDLE_CPU_TARGET_MS,
    }


def _read_cycles(stream: IO[str], sink: queue.Queue[float]) -> None:
    for line in stream:
        match = _CYCLE_LINE.search(line)
        if match:
            sink.put(float(match.group(1)))


def _has_schedstat(pid: int) -> bool:
    return Path(f"/proc/{pid}/task").is_dir() and Path(f"/proc/{pid}/schedstat").exists()


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU time of every thread of the process, plus its reaped children."""
    tasks = Path(f"/proc/{process.pid}/task")
    times = process.cpu_times()
    children = times.children_user + times.children_system
    if not tasks.is_dir():
        return times.user + times.system + children
    total_ns = 0
    for task in tasks.iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total_ns / 1e9 + children


def _collector_json(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [str(_BIN / "rmm-collector"), *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the collector exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the collector did not become ready")


def _print(results: dict[str, object]) -> None:
    def verdict(ok: object) -> str:
        return "ok" if ok else "OVER TARGET"

    print("agent footprint")
    print(
        f"  RSS after start      {results['rss_after_start_mib']:>7} MiB"
        f"  (target <= {RSS_TARGET_MIB:g} MiB) {verdict(results['rss_ok'])}"
    )
    print(f"  RSS after the run    {results['rss_after_run_mib']:>7} MiB")
    print(
        f"  CPU per cycle        {results['cycle_cpu_ms_outside_median']:>7} ms"
        f"  (median, measured outside; target <= {CYCLE_CPU_TARGET_MS:g} ms)"
        f" {verdict(results['cycle_cpu_ok'])}"
    )
    print(
        f"  CPU per cycle        {results['cycle_cpu_ms_median']:>7} ms"
        f"  (median, agent's own clock; max {results['cycle_cpu_ms_max']} ms;"
        f" first cycle {results['first_cycle_cpu_ms']} ms)"
    )
    print(
        f"  CPU between cycles   {results['idle_cpu_ms_per_0_6_s_max']:>7} ms"
        f"  (worst 0.6 s window; target <= {IDLE_CPU_TARGET_MS:g} ms)"
        f" {verdict(results['idle_ok'])}"
    )
    print(f"  threads              {results['threads']:>7}")


if __name__ == "__main__":
    main()
