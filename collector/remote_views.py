"""What `rmm-collector remote` prints for people: the API's JSON as tables and summaries.

`--json` prints the API's answers unchanged; these views are the default. Failed offboards say
which step failed, how, and how its output ended, since that is what a technician acts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.remote_orders import signatures_line
from collector.tables import cell, fields, table
from wire.text import command_line, output_end, printable

# How much of a failed step's output a technician sees (the agent reports up to 4 KiB of its end).
OUTPUT_LINES = 10


def client_label(client_id: str | None, names: Mapping[str, str]) -> str:
    name = names.get(client_id or "")
    return f"{name} ({client_id})" if name else (client_id or "-")


def machines_table(machines: list[dict[str, Any]], names: Mapping[str, str]) -> str:
    return table(
        ("MACHINE ID", "HOSTNAME", "CLIENT", "KIND", "STATE", "LAST SEEN"),
        (
            (
                m["machine_id"],
                m["hostname"],
                names.get(m["client_id"]) or m["client_id"],
                m["kind"],
                m["state"],
                m["last_seen"],
            )
            for m in machines
        ),
        empty="no machines",
    )


def machine_summary(machine: dict[str, Any], names: Mapping[str, str]) -> str:
    summary = fields(
        [
            ("machine", machine["machine_id"]),
            ("hostname", machine["hostname"]),
            ("client", client_label(machine["client_id"], names)),
            ("kind", machine["kind"]),
            ("os", machine.get("os")),
            ("state", machine["state"]),
            ("first seen", machine["first_seen"]),
            ("last seen", machine["last_seen"]),
            ("offboarded", machine.get("offboarded_at")),
            ("agent", machine.get("agent_id")),
            ("flags", machine.get("flags")),
        ]
    )
    components = table(
        ("COMPONENT", "STATUS", "VERSION", "REQUIRED"),
        (
            (c.get("name"), c.get("status"), c.get("version"), c.get("required", True))
            for c in machine.get("components") or []
        ),
        empty="no components reported",
    )
    return f"{summary}\n\n{components}"


def progress_line(step: dict[str, Any]) -> str:
    """A step as `--wait` shows it when the agent reports it."""
    if step.get("argv"):
        return f"step {step_outcome(step)}"
    return f"check {step_outcome(step)} ({cell(step.get('status'))})"


def step_outcome(step: dict[str, Any]) -> str:
    """One step in a sentence: what ran (or which check) and how it ended."""
    component = printable(step.get("component"))
    argv = step.get("argv") or []
    status = step.get("status")
    if not argv:
        # A check or a note: the agent says what it found in the output.
        said = output_end(step.get("output_tail"), 1)
        return f"{component}: {said[0] if said else status}"
    ran = f"{component}: `{command_line(argv)}`"
    code = step.get("exit_code")
    if status == "ok":
        return f"{ran} ok"
    if status == "timeout":
        return f"{ran} timed out" + ("" if code is None else f" (exit status {code})")
    if code is not None:
        return f"{ran} exited with status {code}"
    return f"{ran} {status} (no exit status)"


def failure_report(command: dict[str, Any]) -> list[str]:
    """Why a command did not complete: the agent's reason, then each failed step with the end of
    its output. Empty for a command that has not failed."""
    result = command.get("result") or {}
    lines: list[str] = []
    if command.get("state") == "cancelled":
        lines.append("the command was cancelled")
    if command.get("state") == "offboard_failed" or result.get("status") == "failed":
        lines.append(f"offboard failed: {printable(result.get('reason')) or 'no reason given'}")
        for step in result.get("steps") or []:
            if step.get("status") not in ("failed", "timeout"):
                continue
            if not step.get("argv"):
                lines.append(f"  failed check  {step_outcome(step)}")
                continue
            lines.append(f"  failed step   {step_outcome(step)}")
            end = output_end(step.get("output_tail"), OUTPUT_LINES)
            lines.append("    output ends:" if end else "    (no output)")
            lines.extend(f"    | {line}" for line in end)
    return lines


def command_summary(command: dict[str, Any], names: Mapping[str, str]) -> str:
    rows: list[tuple[str, object]] = [
        ("command", command["command_id"]),
        ("type", command.get("type")),
        ("machine", command.get("machine_id")),
        ("client", client_label(command.get("client_id"), names)),
        ("state", command["state"]),
        ("issuer", command.get("issuer")),
        ("reason", command.get("reason")),
        ("ticket", command.get("ticket")),
        ("created", command.get("created_at")),
        (
            "delivered",
            f"{command['delivered_at']} ({command.get('delivery_count', 0)} delivery(ies))"
            if command.get("delivered_at")
            else None,
        ),
        ("completed", command.get("completed_at")),
    ]
    if command.get("approvals_required"):
        rows.append(("approvals", signatures_line(command)))
    if command.get("rejections"):
        last = command.get("last_rejection") or {}
        rows.append(
            (
                "refused",
                f"{command['rejections']} delivery(ies); last at {last.get('at')}: "
                f"{last.get('reason')}",
            )
        )
    result = command.get("result")
    if result:
        rows.append(("result", f"{result.get('status')}: {result.get('reason') or '-'}"))
    progress = command.get("progress")
    if progress and progress.get("running") and command["state"] == "offboard_pending":
        running = progress["running"]
        rows.append(
            (
                "running",
                f"{printable(running.get('component'))}: "
                f"`{command_line(running.get('argv') or [])}` since {running.get('started_at')}",
            )
        )
    parts = [fields(rows)]
    steps = (result or {}).get("steps") or (progress or {}).get("steps") or []
    if steps:
        parts.append(steps_table(steps))
    failure = failure_report(command)
    if failure:
        parts.append("\n".join(failure))
    return "\n\n".join(parts)


def steps_table(steps: list[dict[str, Any]]) -> str:
    return table(
        ("COMPONENT", "STEP", "STATUS", "EXIT", "SECONDS"),
        (
            (
                s.get("component"),
                command_line(s["argv"]) if s.get("argv") else "check",
                s.get("status"),
                s.get("exit_code"),
                s.get("duration_s") or None,
            )
            for s in steps
        ),
        empty="no steps",
    )


def exposure_report(report: dict[str, Any], names: Mapping[str, str]) -> str:
    def rows(key: str) -> list[tuple[object, ...]]:
        return [
            (
                r["hostname"],
                names.get(r["client_id"]) or r["client_id"],
                r["kind"],
                r["last_seen"],
                r.get("offboard_state"),
                r.get("offboard_requested_at"),
                r["machine_id"],
            )
            for r in report.get(key, [])
        ]

    headers = ("HOSTNAME", "CLIENT", "KIND", "LAST SEEN", "OFFBOARD", "REQUESTED", "MACHINE ID")
    expired = rows("expired_without_offboard")
    pending = rows("offboards_pending_over_7_days")
    return "\n".join(
        [
            f"licence exposure as of {cell(report.get('as_of'))}",
            "",
            f"expired without offboard: {len(expired)}",
            table(headers, expired, empty="  none"),
            "",
            f"offboards pending over 7 days: {len(pending)}",
            table(headers, pending, empty="  none"),
        ]
    )
