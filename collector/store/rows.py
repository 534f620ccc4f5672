"""Columns the parts select, and the records they read them into."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from collector.store.records import CommandRecord, CommandState, MachineRecord, OffboardState
from collector.store.sql import Dialect, Row

MACHINE_COLUMNS = (
    "machine_id, client_id, hardware_id, hostname, os, kind, first_seen, last_seen, "
    "components, offboard_state, offboarded_at, agent_id, clock_offset_ms, "
    "pending_kind, clone_suspected_at, agent_version, users, addresses"
)

COMMAND_COLUMNS = (
    "command_id, type, machine_id, client_id, agent_id, sequence, state, issuer, reason, "
    "ticket, created_at, delivered_at, delivery_count, completed_at, result_status, "
    "result_reason, steps, rejections, progress, progress_at, last_rejection, last_rejected_at, "
    "components, order_b64, order_sha256, batch_id"
)


def qualified(columns: str, alias: str) -> str:
    """`columns` each prefixed with `alias.` (for joins)."""
    return ", ".join(f"{alias}.{name.strip()}" for name in columns.split(","))


def users_text(names: Iterable[str] | None) -> str | None:
    """Names as the machine row keeps them: each once, sorted, one per line (a name with a line
    break in it is no account name, and is left out)."""
    if names is None:
        return None
    return "\n".join(sorted({name for name in names if "\n" not in name and "\r" not in name}))


def lines(text: str | None) -> tuple[str, ...] | None:
    """A list the machine row keeps one item per line; None when never reported."""
    if text is None:
        return None
    return tuple(text.split("\n")) if text else ()


def machine_from_row(r: Row, d: Dialect) -> MachineRecord:
    return MachineRecord(
        machine_id=r[0],
        client_id=r[1],
        hardware_id=r[2],
        hostname=r[3],
        os=r[4],
        kind=r[5],
        first_seen=d.instant(r[6]),
        last_seen=d.instant(r[7]),
        components_json=r[8],
        offboard_state=cast(OffboardState | None, r[9]),
        offboarded_at=d.opt_instant(r[10]),
        agent_id=r[11],
        clock_offset_ms=r[12],
        pending_kind=r[13],
        clone_suspected=r[14] is not None,
        agent_version=r[15],
        users=lines(r[16]),
        addresses=lines(r[17]),
    )


def command_from_row(r: Row, d: Dialect) -> CommandRecord:
    return CommandRecord(
        command_id=r[0],
        type=r[1],
        machine_id=r[2],
        client_id=r[3],
        agent_id=r[4],
        sequence=int(r[5]),
        state=cast(CommandState, r[6]),
        issuer=r[7],
        reason=r[8],
        ticket=r[9],
        created_at=d.instant(r[10]),
        delivered_at=d.opt_instant(r[11]),
        delivery_count=int(r[12]),
        completed_at=d.opt_instant(r[13]),
        result_status=r[14],
        result_reason=r[15],
        steps_json=r[16],
        rejections=int(r[17]),
        progress_json=r[18],
        progress_at=d.opt_instant(r[19]),
        last_rejection=r[20],
        last_rejected_at=d.opt_instant(r[21]),
        components_json=r[22],
        order_b64=r[23],
        order_sha256=r[24],
        batch_id=r[25],
    )
