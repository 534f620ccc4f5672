"""Text from elsewhere (host names, the collector's reasons) made safe to print on a terminal."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

# C0 controls (including ESC, which starts terminal escape sequences), DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# The same, but for a text of several lines: its line breaks stay.
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def printable(text: str | None) -> str:
    """`text` with every control character replaced by U+FFFD, so it cannot drive a terminal."""
    return _CONTROL.sub("\ufffd", text or "")


def printable_lines(text: str | None) -> str:
    """`printable`, keeping line breaks: for reports that quote host names and client names."""
    return _CONTROL_BUT_NEWLINE.sub("\ufffd", text or "")


def output_end(text: str | None, lines: int) -> list[str]:
    """The last `lines` non-blank lines of a program's output, each `printable`: the end of an
    uninstall step's output is where it says why it failed."""
    kept = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    return [printable(line) for line in kept[-lines:]]


def command_line(argv: Sequence[object]) -> str:
    """An uninstall step's argv as one shell-quoted line, `printable` (it is never run through a
    shell: the quoting only shows where each argument ends)."""
    return printable(shlex.join(str(a) for a in argv))
