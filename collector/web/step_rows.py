"""An offboard's steps as people read them: fields, never Python values; the end of the output.

The agent sends the end of each step's output (`output_tail`); the page shows its last lines,
says so when it cut some, and keeps the rest behind a disclosure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wire.text import command_line

TAIL_LINES = 15
TAIL_CHARS = 2000
FAILED = frozenset({"failed", "timeout"})


@dataclass(frozen=True, slots=True)
class StepRow:
    component: str
    # The argv as one line; a check the agent made (no argv) is told as such.
    command: str
    status: str
    exit_code: str
    duration: str
    # The last lines of the output, and when that is not all the agent sent: how many were
    # left out, and the whole text it sent.
    tail: str
    tail_note: str | None
    sent: str | None
    failed: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration": self.duration,
            "tail": self.tail,
            "tail_note": self.tail_note,
            "failed": self.failed,
        }


def _text(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def tail_of(output: str) -> tuple[str, str | None]:
    """The last `TAIL_LINES` lines (at most `TAIL_CHARS` characters) of `output`, and a note
    saying what was left out (None when nothing was)."""
    lines = output.rstrip("\n").splitlines()
    kept = lines[-TAIL_LINES:]
    text = "\n".join(kept)
    if len(text) > TAIL_CHARS:
        text = "…" + text[-TAIL_CHARS:]
    if len(kept) == len(lines) and not text.startswith("…"):
        return text, None
    return text, f"the last {len(kept)} of {len(lines)} lines the agent sent"


def _duration(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return "—"
    return f"{value:.1f} s"


def step_row(step: dict[str, Any]) -> StepRow:
    output = step.get("output_tail") or ""
    if not isinstance(output, str):
        output = ""
    tail, note = tail_of(output)
    argv = step.get("argv") or []
    status = _text(step.get("status"))
    return StepRow(
        component=_text(step.get("component")),
        command=command_line(argv) if argv else "(a check, no command run)",
        status=status,
        exit_code=_text(step.get("exit_code")),
        duration=_duration(step.get("duration_s")),
        tail=tail,
        tail_note=note,
        sent=output if note is not None else None,
        failed=status in FAILED,
    )


def step_rows(steps: list[dict[str, Any]]) -> list[StepRow]:
    return [step_row(step) for step in steps if isinstance(step, dict)]


def first_failed(rows: list[StepRow]) -> StepRow | None:
    """The step that stopped the offboard: the first that failed or timed out."""
    return next((row for row in rows if row.failed), None)
