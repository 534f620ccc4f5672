"""Remote commands: when an offboard is created, who it is handed to, and what a result does.

An offboard moves the machine `offboard_pending` -> `offboarded` (or `offboard_failed`, with the
failed steps; asking again retries). An agent's `rejected` report is a security event that never
ends the command, so a refused forgery cannot cancel the genuine command with the same id. A
report from an agent that does not own the command changes nothing and is audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from collector.store.records import (
    AgentIdentity,
    AuditEntry,
    CommandRecord,
    CommandResultRecord,
    CommandState,
    Conflict,
    NotFound,
    NotOwner,
    OffboardRequestRecord,
)


@dataclass(frozen=True, slots=True)
class OffboardTarget:
    """The machine an offboard is asked for, as it stands."""

    machine_id: str
    client_id: str
    agent_id: str
    hostname: str
    offboard_state: str | None
    components_json: str = "[]"
    offboard_approvals: int | None = None
    operator_key_ids: str | None = None

    @property
    def component_names(self) -> list[str]:
        return order_components(self.components_json)


def order_components(components_json: str) -> list[str]:
    """The component names an offboard's order carries: those the machine last reported (the
    agent runs the uninstall steps of its own configuration for each of these it knows)."""
    return sorted({c["name"] for c in json.loads(components_json or "[]") if "name" in c})


def decide_offboard_request(
    target: OffboardTarget | None, pending: CommandRecord | None
) -> CommandRecord | None:
    """The pending command to answer with, or None when a new one is to be created."""
    if target is None:
        raise NotFound("no machine has that id")
    if target.offboard_state == "offboarded":
        raise Conflict("the machine is already offboarded")
    if target.offboard_state == "moved":
        raise Conflict("the machine moved to another client: offboard it there")
    return pending


def offboard_requested(
    request: OffboardRequestRecord, target: OffboardTarget, command_id: str, now: datetime
) -> AuditEntry:
    return AuditEntry(
        now,
        request.issuer,
        "offboard.requested",
        request.machine_id,
        {
            "command_id": command_id,
            "reason": request.reason,
            "ticket": request.ticket,
            "client_id": target.client_id,
            "hostname": target.hostname,
        },
    )


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    command: CommandRecord
    # Only the agent a command was made for gets it (enrolling again cancels open commands).
    deliver: bool
    audit: AuditEntry | None


def plan_delivery(command: CommandRecord, identity: AgentIdentity, now: datetime) -> DeliveryPlan:
    if command.agent_id != identity.agent_id:
        return DeliveryPlan(command, False, None)
    audit = None
    if command.delivery_count == 0:
        audit = AuditEntry(
            now,
            "system",
            "command.delivered",
            command.machine_id,
            {"command_id": command.command_id, "agent_id": identity.agent_id},
        )
    return DeliveryPlan(command, True, audit)


# The agent removes itself after its final report: no uninstall step of its own to show.
AGENT_ITSELF = "rmm"


def missing_steps(command: CommandRecord, steps_json: str) -> list[str]:
    """Components the offboard was to uninstall for which the report has no step at all."""
    named = set(json.loads(command.components_json or "[]")) - {AGENT_ITSELF}
    reported = {step.get("component") for step in json.loads(steps_json)}
    return sorted(named - reported)


def components_after_offboard(components_json: str, command: CommandRecord, steps_json: str) -> str:
    """The machine's components once its offboard completed, in the heartbeat's shape.

    A completed offboard means the agent confirmed every component the order named gone (or
    never installed), and the agent removes itself after its final report: those are now
    `missing`, without a version. A component the order did not name and the report says
    nothing about (reported only after the request) keeps what it last reported."""
    removed = set(json.loads(command.components_json or "[]")) | {AGENT_ITSELF}
    removed |= {step.get("component") for step in json.loads(steps_json)}
    after = []
    for component in json.loads(components_json or "[]"):
        if component.get("name") in removed:
            component = {**component, "status": "missing", "version": None}
        after.append(component)
    return json.dumps(after, separators=(",", ":"))


Effect = Literal["refuse", "count_rejection", "ignore_repeat", "complete", "fail"]


@dataclass(frozen=True, slots=True)
class ResultDecision:
    effect: Effect
    audit: AuditEntry | None
    # For `complete` and `fail`: the command's final state, and the reason recorded when the
    # collector, not the agent, decided it failed.
    state: CommandState | None = None
    reason: str | None = None

    @property
    def ends_command(self) -> bool:
        return self.effect in ("complete", "fail")


def failed_steps(steps_json: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = json.loads(steps_json)
    return [step for step in steps if step.get("status") != "ok"]


def decide_result(
    command: CommandRecord | None,
    identity: AgentIdentity,
    result: CommandResultRecord,
    now: datetime,
) -> ResultDecision:
    if command is None:
        raise NotFound("no command has that id")
    if command.agent_id != identity.agent_id or command.machine_id != identity.machine_id:
        return ResultDecision(
            "refuse",
            AuditEntry(
                now,
                identity.agent_id,
                "command.result_refused",
                result.command_id,
                {
                    "reason": "the command belongs to another agent",
                    "machine_id": identity.machine_id,
                    "status": result.status,
                },
            ),
        )
    detail: dict[str, Any] = {
        "command_id": command.command_id,
        "status": result.status,
        "reason": result.reason,
    }
    target = command.machine_id
    if result.status == "rejected":
        detail["agent_time"] = result.agent_time
        detail["repeats_not_reported"] = result.suppressed
        return ResultDecision(
            "count_rejection",
            AuditEntry(now, identity.agent_id, "command.rejected", target, detail),
        )
    if command.state in ("offboarded", "cancelled", "awaiting_approval"):
        # A repeated final report, or one about a command that was never delivered to run.
        return ResultDecision("ignore_repeat", None)
    missing = missing_steps(command, result.steps_json) if result.status == "succeeded" else []
    if missing:
        # "Succeeded" without a word about a component is not a completed offboard.
        detail["failed_steps"] = []
        detail["reason"] = f"reported succeeded without a step for: {', '.join(missing)}"
        return ResultDecision(
            "fail",
            AuditEntry(now, identity.agent_id, "offboard.failed", target, detail),
            "offboard_failed",
            reason=detail["reason"],
        )
    if result.status == "succeeded":
        return ResultDecision(
            "complete",
            AuditEntry(now, identity.agent_id, "offboard.completed", target, detail),
            "offboarded",
        )
    detail["failed_steps"] = failed_steps(result.steps_json)
    return ResultDecision(
        "fail",
        AuditEntry(now, identity.agent_id, "offboard.failed", target, detail),
        "offboard_failed",
    )


def decide_progress(command: CommandRecord | None, identity: AgentIdentity) -> bool:
    """Whether an agent's progress report is kept: only for its own command still running. A
    report about another agent's command is refused (`NotOwner`)."""
    if command is None:
        raise NotFound("no command has that id")
    if command.agent_id != identity.agent_id or command.machine_id != identity.machine_id:
        raise NotOwner("the command belongs to another agent")
    return command.state == "offboard_pending"
