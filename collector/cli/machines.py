"""`rmm-collector machine ...`: what the NOC decides about one machine from the shell."""

from __future__ import annotations

import argparse
from typing import Any

from collector.cli.common import CliError, command, emit, local_actor
from collector.settings import Settings
from collector.store.base import NotFound, Store
from collector.views import held_view
from wire.clock import SystemClock
from wire.text import printable


async def approve_reenroll(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    now = SystemClock().now()
    try:
        held = await store.approve_reenroll(args.machine_id, now=now, actor=local_actor())
    except NotFound as exc:
        raise CliError(f"{exc} (see `rmm-collector remote machines`)") from exc
    payload: dict[str, Any] = {
        "machine_id": args.machine_id,
        "approved_for_hours": 24,
        "held": None if held is None else held_view(held),
    }
    text = f"machine {args.machine_id} may enroll again within 24 hours" + (
        "" if held is None else f" (held attempt from {printable(held.hostname)!r})"
    )
    emit(payload, args.json, text)


async def list_held(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    rows = [held_view(h) for h in await store.held_enrollments(args.machine_id)]
    lines = [
        f"{r['machine_id']}  {printable(r['hostname'])}  from {r['address'] or '?'}  "
        f"{r['attempts']} attempt(s), last {r['last_at']}"
        for r in rows
    ]
    emit({"held": rows}, args.json, "\n".join(lines) or "no enrollment is waiting for approval")


async def confirm_kind(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    machine = await store.get_machine(args.machine_id)
    if machine is None:
        raise CliError("no machine has that id")
    kind = args.kind or machine.pending_kind
    if kind is None:
        raise CliError(
            f"machine {args.machine_id} reports no other kind than its billed {machine.kind!r}; "
            "name one with --kind to set it"
        )
    record = await store.set_kind(
        args.machine_id, kind, now=SystemClock().now(), actor=local_actor()
    )
    emit(
        {"machine_id": record.machine_id, "kind": record.kind},
        args.json,
        f"machine {record.machine_id} is billed as a {record.kind} from now on",
    )


def register(sub: Any) -> None:
    machine = sub.add_parser("machine", help="approve re-enrollments, confirm kinds")
    machine_sub = machine.add_subparsers(dest="machine_command", required=True, metavar="ACTION")
    p = command(
        machine_sub,
        "approve-reenroll",
        "let a known machine enroll again without its previous credential (24 hours, once)",
        approve_reenroll,
    )
    p.add_argument("machine_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        machine_sub, "held", "enrollments of known hardware waiting for approval", list_held
    )
    p.add_argument("machine_id", nargs="?", help="only this machine's")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        machine_sub,
        "confirm-kind",
        "bill a machine as the kind its agent reports (or as --kind)",
        confirm_kind,
    )
    p.add_argument("machine_id")
    p.add_argument("--kind", choices=("pc", "server"), help="set this kind instead")
    p.add_argument("--json", action="store_true", help="print JSON")
