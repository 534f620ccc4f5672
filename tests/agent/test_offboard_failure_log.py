"""A failed offboard leaves a line in the agent's own log for each failed step: the command, the
component, the step's argv, how it ended and the last lines of its output, on one line (journald
and the event log keep an entry per line). Real steps, a real ledger file."""

from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path

import pytest

from agent.commands import Job
from agent.config import ComponentSpec
from agent.ledger import CommandLedger
from agent.offboard import Offboarder
from agent.probes import Sample
from tests.agent.test_command_verification import NOW, StoppedClock, payload, signed
from wire.messages import Component

NOISY_FAILURE = (
    "import sys\n"
    "for n in range(40): print(f'Reading package lists... {n}')\n"
    "print('E: Could not get lock /var/lib/dpkg/lock-frontend \\x1b[2J')\n"
    "print('E: Unable to acquire the dpkg frontend lock')\n"
    "sys.exit(100)\n"
)


def still_running() -> Sample:
    return Sample(components=(Component(name="antivirus", status="running"),))


async def offboard_with(tmp_path: Path, *steps: tuple[str, ...], timeout_s: float = 30) -> str:
    ledger = CommandLedger(tmp_path)
    ledger.accept(payload(), base64.b64decode(signed().payload), NOW)
    offboarder = Offboarder(
        [ComponentSpec(name="antivirus", uninstall=steps)],
        still_running,
        state_dir=tmp_path,
        clock=StoppedClock(NOW),
        step_timeout_s=timeout_s,
    )
    result = await offboarder(Job(payload(), None, ledger))
    assert result.status == "failed"
    return "cmd-1"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agent.offboard" and r.levelno >= logging.ERROR
    ]


async def test_a_failed_step_is_logged_with_its_argv_exit_status_and_last_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "purge.py"
    script.write_text(NOISY_FAILURE)
    with caplog.at_level(logging.INFO):
        await offboard_with(tmp_path, (sys.executable, str(script), "--purge"))
    step_line, check_line = errors(caplog)
    assert step_line.startswith(
        f"offboard cmd-1: antivirus failed: step `{sys.executable} {script} --purge` "
        "exited with status 100; output ends: Reading package lists... 37 | "
    )
    assert step_line.endswith(
        "output ends: Reading package lists... 37 | Reading package lists... 38 | "
        "Reading package lists... 39 | "
        "E: Could not get lock /var/lib/dpkg/lock-frontend \ufffd[2J | "
        "E: Unable to acquire the dpkg frontend lock"
    )
    assert "\n" not in step_line and "\x1b" not in step_line  # one line, no terminal escapes
    assert "Reading package lists... 0" not in step_line  # the end, not the start
    assert check_line == (
        "offboard cmd-1: antivirus failed: still running after its uninstall steps"
    )


async def test_a_step_that_times_out_or_cannot_start_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await offboard_with(
            tmp_path, (sys.executable, "-c", "import time; time.sleep(30)"), timeout_s=0.5
        )
    assert "` timed out; output ends: killed after 0 s" in errors(caplog)[0]

    caplog.clear()
    with caplog.at_level(logging.INFO):
        (tmp_path / "other").mkdir()
        await offboard_with(tmp_path / "other", ("/nonexistent/uninstall", "--quiet"))
    assert errors(caplog)[0] == (
        "offboard cmd-1: antivirus failed: step `/nonexistent/uninstall --quiet` did not run to "
        "an exit status; output ends: cannot start: No such file or directory"
    )
