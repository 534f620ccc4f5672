"""Running the platform's own tools (systemctl, launchctl, reg, ioreg, dpkg-query) behind one seam.

Detection and probes take a `Runner`, so tests feed them the tools' real output without running
them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str = ""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float = ...) -> Completed:
        """Run `argv`, return its exit code and output; raise `CommandFailed` if it cannot run."""
        ...


class CommandFailed(Exception):
    """A platform tool could not run, timed out, or exited with an unexpected status."""


def run_command(argv: Sequence[str], *, timeout: float = 10.0) -> Completed:
    """Run a tool with a C locale (parseable output), no shell; a non-zero exit is no error."""
    env = dict(os.environ, LC_ALL="C", LANG="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{argv[0]} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise CommandFailed(f"{argv[0]} could not be run: {exc.strerror or exc}") from exc
    return Completed(done.returncode, done.stdout, done.stderr)
