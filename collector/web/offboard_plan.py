"""What an offboard will do to one machine, as the offboard form tells it before anyone confirms.

The collector knows the components the machine last reported, and so the names the order will
carry; the uninstall commands themselves live in the agent's own configuration. What the agent
did report of them (the steps of an earlier attempt on this machine) is shown beside each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from collector.rules.commands import AGENT_ITSELF, order_components
from collector.store.base import CommandRecord
from collector.web.views import components_of


@dataclass(frozen=True, slots=True)
class PlannedComponent:
    name: str
    status: str
    version: str
    required: bool
    # What the offboard does with it, in a sentence.
    action: str
    # The commands the agent ran for it in an earlier attempt (as it reported them).
    earlier: list[str]


@dataclass(frozen=True, slots=True)
class OffboardPlan:
    # The names the order carries, and of them those whose uninstall steps the agent runs.
    named: list[str]
    uninstalled: list[str]
    components: list[PlannedComponent]
    # The attempt the earlier commands come from, if any.
    earlier_command: CommandRecord | None


def _earlier(commands: list[CommandRecord]) -> tuple[CommandRecord | None, dict[str, list[str]]]:
    """The latest earlier offboard of the machine that reported steps, and per component the
    commands it ran."""
    reported = [c for c in commands if c.steps_json or c.progress_json]
    if not reported:
        return None, {}
    latest = max(reported, key=lambda c: c.created_at)
    if latest.steps_json:
        steps: list[dict[str, Any]] = json.loads(latest.steps_json)
    else:
        steps = list(json.loads(latest.progress_json or "{}").get("steps") or [])
    ran: dict[str, list[str]] = {}
    for step in steps:
        argv = step.get("argv") or []
        if argv and isinstance(step.get("component"), str):
            ran.setdefault(step["component"], []).append(" ".join(str(a) for a in argv))
    return latest, ran


def _action(name: str, status: str, named: bool) -> str:
    if name == AGENT_ITSELF:
        return "the agent removes itself last, after its final report"
    if not named:
        return "not in the order: left installed"
    if status == "missing":
        return "reported missing: the agent checks again and skips it if it is gone"
    return "the agent runs the uninstall steps from its own configuration, then checks it is gone"


def offboard_plan(
    components_json: str, earlier_commands: list[CommandRecord], pending: CommandRecord | None
) -> OffboardPlan:
    """What an offboard asked now (or the one pending) will do, from what the collector knows."""
    named = (
        list(json.loads(pending.components_json))
        if pending is not None and pending.components_json is not None
        else order_components(components_json)
    )
    others = [c for c in earlier_commands if pending is None or c.command_id != pending.command_id]
    command, ran = _earlier(others)
    planned = [
        PlannedComponent(
            name=str(c.get("name")),
            status=str(c.get("status") or "—"),
            version=str(c.get("version") or "—"),
            required=bool(c.get("required", True)),
            action=_action(str(c.get("name")), str(c.get("status")), c.get("name") in named),
            earlier=ran.get(str(c.get("name")), []),
        )
        for c in components_of(components_json)
    ]
    return OffboardPlan(
        named=named,
        uninstalled=[n for n in named if n != AGENT_ITSELF],
        components=planned,
        earlier_command=command if any(p.earlier for p in planned) else None,
    )
