"""`rmm-collector operator ...`: operators' keys for two-person offboarding.

`keygen` runs on the operator's own machine and touches no collector state; `add` and `list`
register keys on the collector by name, only so it can show who signed (agents trust just the
keys pinned in their own config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from collector import operator_keys
from collector.cli.common import CliError, command, emit, local_actor
from collector.settings import Settings
from collector.store.base import Conflict, Store
from wire.clock import SystemClock
from wire.times import format_instant


def keygen(args: argparse.Namespace) -> int:
    try:
        line = operator_keys.generate(args.key)
    except operator_keys.OperatorKeyError as exc:
        print(f"rmm-collector: {exc}", file=sys.stderr)
        return 2
    emit(
        {"key_file": str(args.key), "public_key": line},
        args.json,
        f"operator key written to {args.key} (mode 0600, encrypted with your passphrase)\n"
        f"public line (pin it in agents' operator_keys, register it with `operator add`):\n"
        f"{line}",
    )
    return 0


async def operator_add(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    name = args.name.strip()
    if not name:
        raise CliError("the operator's name must not be empty")
    try:
        record = await store.add_operator(
            name, args.keyline, now=SystemClock().now(), actor=local_actor()
        )
    except ValueError as exc:
        raise CliError(f"not an operator key line: {exc}") from exc
    except Conflict as exc:
        raise CliError(str(exc)) from exc
    emit(
        {"name": record.name, "key_id": record.key_id},
        args.json,
        f"operator {record.name!r} registered with key {record.key_id}",
    )


async def operator_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    operators = await store.list_operators()
    rows = [
        {
            "name": o.name,
            "key_id": o.key_id,
            "public_key": o.public_key,
            "added_at": format_instant(o.added_at),
        }
        for o in operators
    ]
    lines = [f"{r['name']}  {r['key_id']}  added {r['added_at']}" for r in rows]
    emit({"operators": rows}, args.json, "\n".join(lines) or "no operators registered")


def register(sub: Any) -> None:
    operator = sub.add_parser("operator", help="operators' keys for two-person offboarding")
    operator_sub = operator.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    p = operator_sub.add_parser(
        "keygen",
        help="make your operator key on your own machine (encrypted, mode 0600)",
        description="Make an Ed25519 operator key in FILE, encrypted with a passphrase "
        f"({operator_keys.PASSPHRASE_ENV} or asked for). Run it on your own machine, never on "
        "the collector; it prints the public line agents pin.",
    )
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="the new key file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(local_handler=keygen)
    p = command(operator_sub, "add", "register an operator's public key by name", operator_add)
    p.add_argument("name", help="the operator's name, shown beside each signature")
    p.add_argument("keyline", help="the operator's public line <key_id>:<base64>")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(operator_sub, "list", "list registered operators", operator_list)
    p.add_argument("--json", action="store_true", help="print JSON")
