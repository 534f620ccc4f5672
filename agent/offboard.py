"""Offboarding: uninstall every deployed component, confirm each is gone, report step by step.

Each component's `uninstall` argv lists run in order, each with a timeout; the tail of their output
and their exit codes go into the result. A component already gone is skipped, which is also how an
offboard interrupted by a crash resumes: by checking what is still installed, never by blindly
running everything again. The agent itself (`rmm`) goes last, after the result is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence

from agent.config import ComponentSpec
from agent.probes import Sample
from wire.messages import CommandResultRequest, StepResult
from wire.signing import CommandPayload

log = logging.getLogger(__name__)

OUTPUT_TAIL = 4096
DEFAULT_STEP_TIMEOUT_S = 600.0


async def run_step(component: str, argv: Sequence[str], timeout_s: float) -> StepResult:
    """Run one argv list (no shell), with a timeout; capture its exit code and output tail."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=os.name == "posix",
        )
    except OSError as exc:
        return StepResult(
            component=component,
            argv=list(argv),
            status="failed",
            output_tail=f"cannot start: {exc.strerror or exc}",
        )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError:
        _kill_group(process)
        with contextlib.suppress(Exception):
            output, _ = await process.communicate()
        return StepResult(
            component=component,
            argv=list(argv),
            status="timeout",
            exit_code=process.returncode,
            output_tail=f"killed after {timeout_s:.0f} s",
            duration_s=round(time.monotonic() - started, 3),
        )
    text = output.decode("utf-8", errors="replace")[-OUTPUT_TAIL:]
    return StepResult(
        component=component,
        argv=list(argv),
        status="ok" if process.returncode == 0 else "failed",
        exit_code=process.returncode,
        output_tail=text,
        duration_s=round(time.monotonic() - started, 3),
    )


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


class Offboarder:
    def __init__(
        self,
        specs: Sequence[ComponentSpec],
        probe: Callable[[], Sample],
        *,
        step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    ) -> None:
        self._specs = tuple(specs)
        self._probe = probe
        self._timeout = step_timeout_s

    async def _status(self, name: str) -> str:
        sample = await asyncio.to_thread(self._probe)
        if any(f.component == name for f in sample.failures):
            return "unknown (probe failed)"
        for component in sample.components:
            if component.name == name:
                return component.status
        return "missing"

    async def __call__(self, payload: CommandPayload) -> CommandResultRequest:
        steps: list[StepResult] = []
        complete = True
        for spec in self._specs:
            before = await self._status(spec.name)
            if before == "missing":
                steps.append(
                    StepResult(
                        component=spec.name, argv=[], status="skipped", output_tail="not installed"
                    )
                )
                continue
            if not spec.uninstall:
                complete = False
                steps.append(
                    StepResult(
                        component=spec.name,
                        argv=[],
                        status="failed",
                        output_tail=f"{before}, and the config has no uninstall steps for it",
                    )
                )
                continue
            for argv in spec.uninstall:
                log.warning("offboard %s: %s: running %s", payload.command_id, spec.name, argv)
                step = await run_step(spec.name, argv, self._timeout)
                steps.append(step)
                if step.status != "ok":
                    break
            after = await self._status(spec.name)
            if after != "missing":
                complete = False
                steps.append(
                    StepResult(
                        component=spec.name,
                        argv=[],
                        status="failed",
                        output_tail=f"still {after} after its uninstall steps",
                    )
                )
        failed = [s.component for s in steps if s.status in ("failed", "timeout")]
        if complete:
            return CommandResultRequest(status="succeeded", steps=steps)
        return CommandResultRequest(
            status="failed",
            reason=f"not removed: {', '.join(dict.fromkeys(failed))}",
            steps=steps,
        )
