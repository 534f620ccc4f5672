"""Uninstall steps as processes that outlive the agent, so a crash never leaves one half-watched.

Each step runs under a tiny Python wrapper, started in its own session (its own process group on
POSIX), with stdin closed and its output going to a file in `state_dir/steps/`, not a pipe: a pipe
would kill an `apt-get purge` with SIGPIPE as soon as a dead agent stopped reading it. The wrapper
writes the step's exit status atomically to a file beside the output, so an agent that was killed
while the step ran can still learn how it ended. The environment carries a tag naming the step,
which finds a step whose process id never reached the ledger (a crash right after the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.state import FILE_MODE, ensure_private_dir

STEPS_DIR = "steps"
TAG_ENV = "RMM_AGENT_STEP"
OUTPUT_TAIL = 4096
POLL_S = 0.2

# Runs with -I -S (no site, no user paths): only the standard library, fast to start.
_WRAPPER = """\
import os, subprocess, sys
exit_file = sys.argv[1]
try:
    code = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL)
except OSError as exc:
    print("cannot start: " + (exc.strerror or str(exc)), flush=True)
    code = 127
tmp = exit_file + ".tmp"
with open(tmp, "w") as handle:
    handle.write(str(code))
    handle.flush()
    os.fsync(handle.fileno())
os.replace(tmp, exit_file)
"""


@dataclass(frozen=True, slots=True)
class StepFiles:
    output: Path
    exit_status: Path

    def outcome(self) -> tuple[int | None, str]:
        """The exit status the wrapper recorded (None: it never finished) and the output's end."""
        code: int | None = None
        with contextlib.suppress(OSError, ValueError):
            code = int(self.exit_status.read_text().strip())
        return code, self.output_tail()

    def output_tail(self) -> str:
        try:
            with self.output.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - OUTPUT_TAIL))
                data = handle.read()
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")[-OUTPUT_TAIL:]


def step_files(state_dir: Path, tag: str) -> StepFiles:
    folder = ensure_private_dir(state_dir / STEPS_DIR)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)[:200]
    return StepFiles(folder / f"{safe}.out", folder / f"{safe}.exit")


@dataclass(frozen=True, slots=True)
class Launched:
    process: asyncio.subprocess.Process
    pid: int
    started: float | None  # the OS's start time of the process, guarding against pid reuse


async def launch(argv: Sequence[str], files: StepFiles, tag: str) -> Launched:
    """Start one step (no shell) detached from the agent; raises OSError if the wrapper cannot."""
    for stale in (files.output, files.exit_status):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd = os.open(files.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _WRAPPER,
            str(files.exit_status),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=os.name == "posix",
            env={**os.environ, TAG_ENV: tag},
        )
    finally:
        os.close(fd)
    return Launched(process, process.pid, process_started(process.pid))


async def wait_launched(launched: Launched, timeout_s: float) -> bool:
    """Wait for a step this agent started; False (and the step killed) if it ran out of time."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await launched.process.wait()
        return True
    except TimeoutError:
        kill_step(launched.pid)
        with contextlib.suppress(Exception):
            await launched.process.wait()
        return False


async def wait_orphan(pid: int, started: float | None, timeout_s: float) -> bool:
    """Wait for a step an earlier agent process started; False (and killed) past `timeout_s`."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while is_alive(pid, started):
        if time.monotonic() >= deadline:
            kill_step(pid)
            return False
        await asyncio.sleep(POLL_S)
    return True


def process_started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def is_alive(pid: int, started: float | None) -> bool:
    """The process still runs and is the one recorded (same start time), not a reused pid."""
    import psutil

    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 0.01:
            return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, OSError):
        return False


def find_tagged(tag: str) -> list[tuple[int, float | None]]:
    """Processes whose environment names this step (the wrapper and what it started)."""
    import psutil

    found: list[tuple[int, float | None]] = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(TAG_ENV) == tag:
                found.append((process.pid, process.create_time()))
        except (psutil.Error, OSError):
            continue
    return found


def kill_step(pid: int) -> None:
    """Kill the step's wrapper, everything it started, and (POSIX) its whole process group."""
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        root = psutil.Process(pid)
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error, OSError):
                child.kill()
        root.kill()
    if os.name == "posix":
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
