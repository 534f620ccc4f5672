"""The audit log as people read it: machines and agents by hostname and client (linked to the
machine's page), and each detail as words, never as a Python value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from collector.store.base import AuditEntry, MachineName
from wire.text import command_line, output_end

# Detail keys that hold a machine's or an agent's id.
_MACHINE_KEYS = ("machine_id",)
_AGENT_KEYS = ("agent_id",)


@dataclass(frozen=True, slots=True)
class Detail:
    key: str
    text: str
    # Set when the value names a machine (itself, or through one of its agents).
    machine: MachineName | None = None
    # Set when the value is a client's id: the client's name.
    client_name: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    entry_id: int
    entry: AuditEntry
    # The machine whose agent acted, when the actor is an agent id.
    actor_machine: MachineName | None
    # The machine the entry is about, when its target is a machine (or an agent) id.
    target_machine: MachineName | None
    # The client's name, when the target is a client id.
    target_client: str | None
    details: list[Detail]


def named_ids(entries: Iterable[tuple[int, AuditEntry]]) -> frozenset[str]:
    """Every id in the entries that may name a machine or an agent."""
    ids: set[str] = set()
    for _, entry in entries:
        ids.update((entry.actor, entry.target))
        for key in (*_MACHINE_KEYS, *_AGENT_KEYS):
            value = entry.detail.get(key)
            if isinstance(value, str):
                ids.add(value)
    return frozenset(i for i in ids if i)


def _step_text(step: dict[str, Any]) -> str:
    argv = step.get("argv") or []
    what = command_line(argv) if argv else "check"
    text = f"{step.get('component') or '—'}: {what} {step.get('status') or '—'}"
    if step.get("exit_code") is not None:
        text += f", exit code {step['exit_code']}"
    last = output_end(str(step.get("output_tail") or ""), 1)
    if last:
        text += f"; output ends: {last[0].strip()[-200:]}"
    return text


def detail_text(value: Any) -> str | None:
    """A detail value in words: None is left out, lists are joined, steps are told as steps."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if "component" in value and "status" in value:
            return _step_text(value)
        parts = [f"{k} {text}" for k, v in value.items() if (text := detail_text(v)) is not None]
        return ", ".join(parts) or None
    if isinstance(value, list | tuple):
        items = [text for v in value if (text := detail_text(v)) is not None]
        return "; ".join(items) if items else "none"
    return str(value)


def audit_rows(
    entries: Iterable[tuple[int, AuditEntry]],
    machines: dict[str, MachineName],
    agents: dict[str, MachineName],
    clients: dict[str, str],
) -> list[AuditRow]:
    """`clients` maps client ids to names."""

    def named(value: Any) -> MachineName | None:
        if not isinstance(value, str):
            return None
        return machines.get(value) or agents.get(value)

    rows = []
    for entry_id, entry in entries:
        details = []
        for key, value in entry.detail.items():
            text = detail_text(value)
            if text is None:
                continue
            machine = named(value) if key in (*_MACHINE_KEYS, *_AGENT_KEYS) else None
            client = clients.get(value) if key == "client_id" and isinstance(value, str) else None
            details.append(Detail(key, text, machine, client))
        rows.append(
            AuditRow(
                entry_id=entry_id,
                entry=entry,
                actor_machine=agents.get(entry.actor),
                target_machine=named(entry.target),
                target_client=clients.get(entry.target),
                details=details,
            )
        )
    return rows
