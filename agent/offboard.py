"""Offboarding: uninstall the deployed components, confirm each is gone, report step by step.

The order the operators signed names the components whose uninstall steps run (in catalogue
order; `rmm` is the agent itself, which goes last, after the result is acknowledged); without an
order, every catalogue component. Each component is checked before and after its steps; its
`uninstall` argv lists run in order, each with a timeout (`agent/steps.py`).

Every check and step is recorded in the ledger before and after it runs. That is how an offboard
interrupted by a crash resumes: recorded checks and finished steps are reused as they are, a step
that may still be running is waited for (or stopped at its deadline) and never started a second
time, and the result lists every step, from before the crash too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from agent.commands import Job
from agent.config import AGENT_COMPONENT, ComponentSpec
from agent.ledger import StepKind, StepRecord
from agent.probes import Sample
from agent.steps import (
    find_tagged,
    launch,
    step_files,
    wait_launched,
    wait_orphan,
)
from wire.clock import Clock
from wire.messages import CommandResultRequest, RunningStep, StepResult
from wire.text import command_line, output_end, printable
from wire.times import InstantError, format_instant, parse_instant

log = logging.getLogger(__name__)

DEFAULT_STEP_TIMEOUT_S = 600.0
# How much of a failed step's output its log line quotes: the last lines, where tools say why.
LOG_OUTPUT_LINES = 5
LOG_OUTPUT_CHARS = 1000

Progress = Callable[[str, Sequence[StepResult], RunningStep | None], Awaitable[None]]


def failed_step_line(step: StepResult) -> str:
    """A failed step in one line: the component, the step's argv, how it ended and the last lines
    of its output (joined with ` | `: journald and the event log keep one entry per line)."""
    if not step.argv:
        # A check, or a component the agent could not act on: the output says what it found.
        return printable(f"{step.component} failed: {step.output_tail.strip() or step.status}")
    if step.status == "timeout":
        how = "timed out"
    elif step.exit_code is not None:
        how = f"exited with status {step.exit_code}"
    else:
        how = "did not run to an exit status"
    end = " | ".join(output_end(step.output_tail, LOG_OUTPUT_LINES))[-LOG_OUTPUT_CHARS:]
    return (
        f"{printable(step.component)} failed: step `{command_line(step.argv)}` {how}; "
        f"output ends: {end or '(no output)'}"
    )


def log_failure(command_id: str, result: CommandResultRequest) -> None:
    """The agent's own record of a failed offboard: a line per failed step, with the command."""
    for step in result.steps:
        if step.status in ("failed", "timeout"):
            log.error("offboard %s: %s", printable(command_id), failed_step_line(step))


class Offboarder:
    def __init__(
        self,
        specs: Sequence[ComponentSpec],
        probe: Callable[[], Sample],
        *,
        state_dir: Path,
        clock: Clock,
        step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
        progress: Progress | None = None,
    ) -> None:
        self._specs = tuple(specs)
        self._probe = probe
        self._state_dir = state_dir
        self._clock = clock
        self._timeout = step_timeout_s
        self._progress = progress

    async def __call__(self, job: Job) -> CommandResultRequest:
        run = _Run(self, job)
        return await run.execute()


class _Run:
    """One offboard's execution against its ledger entry."""

    def __init__(self, owner: Offboarder, job: Job) -> None:
        self._o = owner
        self._job = job
        self._steps: list[StepResult] = []

    def _selected(self) -> tuple[list[ComponentSpec], list[str]]:
        """The catalogue components to uninstall, and names the order gave that it lacks."""
        wanted = self._job.order.components if self._job.order is not None else None
        if wanted is None:
            return list(self._o._specs), []
        known = {spec.name for spec in self._o._specs}
        chosen = [spec for spec in self._o._specs if spec.name in wanted]
        unknown = [n for n in dict.fromkeys(wanted) if n not in known and n != AGENT_COMPONENT]
        return chosen, unknown

    async def execute(self) -> CommandResultRequest:
        specs, unknown = self._selected()
        complete = True
        for spec in specs:
            complete &= await self._component(spec)
        for name in unknown:
            complete = False
            self._steps.append(
                StepResult(
                    component=name[:64],
                    argv=[],
                    status="failed",
                    output_tail="named by the order but not in this agent's component catalogue",
                )
            )
        await self._report_progress(None)
        failed = [s for s in self._steps if s.status in ("failed", "timeout")]
        if complete:
            return CommandResultRequest(status="succeeded", steps=self._steps)
        result = CommandResultRequest(
            status="failed",
            reason=f"not removed: {', '.join(dict.fromkeys(s.component for s in failed))}",
            steps=self._steps,
        )
        log_failure(self._job.command_id, result)
        return result

    async def _component(self, spec: ComponentSpec) -> bool:
        before = await self._check(spec.name, "precheck")
        if before == "missing":
            self._steps.append(
                StepResult(
                    component=spec.name, argv=[], status="skipped", output_tail="not installed"
                )
            )
            return True
        if not spec.uninstall:
            self._steps.append(
                StepResult(
                    component=spec.name,
                    argv=[],
                    status="failed",
                    output_tail=f"{before}, and the config has no uninstall steps for it",
                )
            )
            return False
        for index, argv in enumerate(spec.uninstall):
            step = await self._step(spec.name, index, list(argv))
            self._steps.append(step)
            await self._report_progress(None)
            if step.status != "ok":
                break
        after = await self._check(spec.name, "postcheck")
        if after == "missing":
            return True
        self._steps.append(
            StepResult(
                component=spec.name,
                argv=[],
                status="failed",
                output_tail=f"still {after} after its uninstall steps",
            )
        )
        return False

    def _recorded(self, component: str, kind: StepKind, index: int = 0) -> StepRecord | None:
        try:
            return self._job.ledger.step(self._job.command_id, component, kind, index)
        except KeyError:
            return None

    async def _check(self, component: str, kind: StepKind) -> str:
        recorded = self._recorded(component, kind)
        if recorded is not None and recorded.observed is not None:
            return recorded.observed
        observed = await self._status(component)
        self._job.ledger.record_step(
            self._job.command_id, StepRecord(component=component, kind=kind, observed=observed)
        )
        return observed

    async def _status(self, name: str) -> str:
        sample = await asyncio.to_thread(self._o._probe)
        for failure in sample.failures:
            if failure.component == name:
                return f"unknown (probe failed: {failure.reason})"
        for component in sample.components:
            if component.name == name:
                note = next((n.reason for n in sample.notes if n.component == name), None)
                if note is None or component.status == "missing":
                    return component.status
                return f"{component.status} ({note})"
        return "missing"

    async def _step(self, component: str, index: int, argv: list[str]) -> StepResult:
        recorded = self._recorded(component, "step", index)
        if recorded is not None and recorded.state == "done" and recorded.result is not None:
            return recorded.result
        if recorded is not None:
            return await self._reconcile(recorded)
        return await self._run_fresh(component, index, argv)

    def _tag(self, component: str, index: int) -> str:
        return f"{self._job.command_id}.{component}.{index}"

    async def _run_fresh(self, component: str, index: int, argv: list[str]) -> StepResult:
        ledger, command_id = self._job.ledger, self._job.command_id
        started_at = self._o._clock.now()
        record = StepRecord(
            component=component,
            kind="step",
            index=index,
            argv=argv,
            state="starting",
            started_at=format_instant(started_at),
        )
        ledger.record_step(command_id, record)  # durable before the process exists
        tag = self._tag(component, index)
        files = step_files(self._o._state_dir, tag)
        log.warning("offboard %s: %s: running %s", command_id, component, argv)
        began = time.monotonic()
        try:
            launched = await launch(argv, files, tag)
        except OSError as exc:
            return self._done(record, "failed", None, f"cannot start: {exc.strerror or exc}", 0.0)
        record.state, record.pid, record.pid_started = "running", launched.pid, launched.started
        ledger.record_step(command_id, record)
        await self._report_progress(
            RunningStep(component=component, argv=argv, started_at=record.started_at or "")
        )
        finished = await wait_launched(launched, self._o._timeout)
        code, output = files.outcome()
        duration = time.monotonic() - began
        if not finished:
            return self._done(
                record,
                "timeout",
                code,
                f"{output}\nkilled after {self._o._timeout:.0f} s",
                duration,
            )
        return self._outcome(record, code, output, duration)

    async def _reconcile(self, record: StepRecord) -> StepResult:
        """A step recorded as starting or running when the agent stopped: wait for it if it is
        still alive (stopping it at its deadline), then take its recorded outcome. Never run it
        a second time."""
        tag = self._tag(record.component, record.index)
        files = step_files(self._o._state_dir, tag)
        started_at = self._started_at(record)
        remaining = self._o._timeout - (self._o._clock.now() - started_at).total_seconds()
        alive: list[tuple[int, float | None]] = []
        if record.pid is not None:
            alive.append((record.pid, record.pid_started))
        else:
            alive = await asyncio.to_thread(find_tagged, tag)
        timed_out = False
        for pid, started in alive:
            log.warning(
                "offboard %s: %s step %d (pid %d) outlived the agent's restart; waiting for it",
                self._job.command_id,
                record.component,
                record.index,
                pid,
            )
            await self._report_progress(
                RunningStep(
                    component=record.component,
                    argv=record.argv,
                    started_at=format_instant(started_at),
                )
            )
            timed_out |= not await wait_orphan(pid, started, remaining)
        code, output = files.outcome()
        duration = (self._o._clock.now() - started_at).total_seconds()
        if timed_out:
            return self._done(
                record,
                "timeout",
                code,
                f"{output}\nkilled after {self._o._timeout:.0f} s",
                duration,
            )
        if code is None:
            note = (
                "the agent stopped while this step was starting or running, and it left no exit "
                "status; it is not run again"
            )
            return self._done(record, "failed", None, f"{output}\n{note}".strip(), duration)
        return self._outcome(record, code, output, duration)

    def _started_at(self, record: StepRecord) -> datetime:
        try:
            return parse_instant(record.started_at or "")
        except InstantError:
            return self._o._clock.now()

    def _outcome(
        self, record: StepRecord, code: int | None, output: str, duration: float
    ) -> StepResult:
        if code == 127 and output.startswith("cannot start:"):
            return self._done(record, "failed", None, output.strip(), duration)
        return self._done(record, "ok" if code == 0 else "failed", code, output, duration)

    def _done(
        self,
        record: StepRecord,
        status: str,
        code: int | None,
        output: str,
        duration: float,
    ) -> StepResult:
        result = StepResult(
            component=record.component,
            argv=record.argv,
            status=status,  # type: ignore[arg-type]
            exit_code=code,
            # A NUL cannot be stored by the collector (and would make the report a 400).
            output_tail=output[-4096:].replace("\x00", "\ufffd"),
            duration_s=round(max(0.0, duration), 3),
        )
        record.state, record.result = "done", result
        self._job.ledger.record_step(self._job.command_id, record)
        return result

    async def _report_progress(self, running: RunningStep | None) -> None:
        if self._o._progress is not None:
            await self._o._progress(self._job.command_id, list(self._steps), running)
