"""Signing offboard orders in `rmm-collector remote`: the private key never leaves this machine.

The collector hands out the exact order bytes; this module decodes them, shows what they order
(machine, client, components, reason, requester, validity), checks they are what was asked for,
signs those same bytes with the operator's key and sends back only the signature and the public
line. A collector that changed the order between request and signature is caught here, and an
agent checks every signature again against the keys it pins.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import operator_keys
from collector.tables import fields
from wire.orders import OffboardOrder, OrderRefused, decode_order, order_digest, sign_order
from wire.signing import pin_line
from wire.text import printable

OPEN_STATES = ("awaiting_approval", "offboard_pending")


class OrderCheckFailed(Exception):
    """The order the collector gave is not the one asked for: nothing is signed."""


def read_order(command: dict[str, Any]) -> tuple[bytes, OffboardOrder]:
    """The order bytes of a command as the API shows it, checked against its own fields."""
    order_b64 = command.get("order")
    if not order_b64:
        raise OrderCheckFailed(f"command {command.get('command_id')} carries no order to sign")
    try:
        data = base64.b64decode(order_b64, validate=True)
        order = decode_order(data)
    except (ValueError, OrderRefused) as exc:
        raise OrderCheckFailed(f"the collector sent an unreadable order: {exc}") from exc
    if command.get("order_sha256") not in (None, order_digest(data)):
        raise OrderCheckFailed("the order's digest does not match its bytes")
    if order.command_id != command.get("command_id"):
        raise OrderCheckFailed("the order names another command than the one shown")
    if command.get("machine_id") not in (None, order.machine_id):
        raise OrderCheckFailed("the order names another machine than the command")
    return data, order


def describe(order: OffboardOrder) -> str:
    components = ", ".join(order.components) or "(none reported)"
    ticket = f", ticket {printable(order.ticket)}" if order.ticket else ""
    return (
        f"  machine    {printable(order.hostname)} ({order.machine_id})\n"
        f"  client     {order.client_id}\n"
        f"  uninstalls {printable(components)}, then the agent itself\n"
        f"  reason     {printable(order.reason)}{ticket}\n"
        f"  requester  {printable(order.requester)}\n"
        f"  valid      {order.issued_at} to {order.not_after}"
    )


async def confirm(question: str, args: argparse.Namespace) -> bool:
    if getattr(args, "yes", False) or not sys.stdin.isatty():
        return True
    answer = await asyncio.to_thread(input, f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def load_key(args: argparse.Namespace) -> Ed25519PrivateKey:
    return operator_keys.load(args.key)


def approval_body(data: bytes, key: Ed25519PrivateKey) -> dict[str, str]:
    approval = sign_order(data, key)
    return {
        "key_id": approval.key_id,
        "signature": approval.signature,
        "public_key": pin_line(key.public_key()),
    }


async def sign_command(api: Any, command: dict[str, Any], key: Ed25519PrivateKey) -> Any:
    """Sign one command's order and send the approval; the command as the collector now has it."""
    data, _ = read_order(command)
    return await api.call(
        "POST",
        f"/v1/commands/{quote(command['command_id'])}/approvals",
        approval_body(data, key),
    )


def signatures_line(command: dict[str, Any]) -> str:
    signed = [
        f"{a.get('operator') or a['actor']} ({a['key_id']}"
        + ("" if a.get("counted", True) else ", not pinned by the agent")
        + ")"
        for a in command.get("approvals", [])
    ]
    required = command.get("approvals_required", 0)
    return printable(
        f"{len([a for a in command.get('approvals', []) if a.get('counted', True)])} of "
        f"{required} approval(s): {', '.join(signed) or 'none yet'}"
    )


async def cmd_approve(api: Any, args: argparse.Namespace) -> int:
    key = load_key(args)
    if args.batch:
        return await _approve_batch(api, args, key)
    if not args.command_id:
        raise OrderCheckFailed("name the command to approve, or --batch ID")
    command = await api.call("GET", f"/v1/commands/{quote(args.command_id)}")
    _, order = read_order(command)
    print(f"order for command {command['command_id']} ({command['state']}):", file=sys.stderr)
    print(describe(order), file=sys.stderr)
    print(f"  so far     {signatures_line(command)}", file=sys.stderr)
    if not await confirm("Sign this order?", args):
        print("nothing signed", file=sys.stderr)
        return 1
    answer = await sign_command(api, command, key)
    print(f"signed: {answer['state']}; {signatures_line(answer)}", file=sys.stderr)
    if getattr(args, "wait", False):
        return 0  # what `--wait` follows is printed at the end
    if args.json:
        print(json.dumps(answer))
    else:
        print(
            fields(
                [
                    ("command", answer["command_id"]),
                    ("state", answer["state"]),
                    ("approvals", signatures_line(answer)),
                ]
            )
        )
    return 0


async def _approve_batch(api: Any, args: argparse.Namespace, key: Ed25519PrivateKey) -> int:
    batch = await api.call("GET", f"/v1/batches/{quote(args.batch)}")
    # Pending ones too: an agent that has not said what it requires may require them.
    commands = [c for c in batch["commands"] if c["state"] in OPEN_STATES]
    orders = [(c, *read_order(c)) for c in commands]
    clients = sorted({order.client_id for _, _, order in orders})
    reasons = sorted({order.reason for _, _, order in orders})
    print(
        f"bulk offboard {args.batch}: {len(orders)} open order(s), client(s) "
        f"{', '.join(clients) or '-'}, reason {printable('; '.join(reasons)) or '-'}",
        file=sys.stderr,
    )
    for _, _, order in orders[:20]:
        print(f"  {printable(order.hostname)}: {', '.join(order.components)}", file=sys.stderr)
    if len(orders) > 20:
        print(f"  ... and {len(orders) - 20} more", file=sys.stderr)
    signed = failed = 0
    if orders:
        if not await confirm(f"Sign all {len(orders)} orders?", args):
            print("nothing signed", file=sys.stderr)
            return 1
        signed, failed = await send_batch(
            api, [(c["command_id"], data) for c, data, _ in orders], key
        )
    else:
        print("nothing to sign", file=sys.stderr)
    if args.json:
        print(json.dumps({"batch_id": args.batch, "signed": signed, "failed": failed}))
    else:
        print(fields([("batch", args.batch), ("signed", signed), ("refused", failed)]))
    return 0 if failed == 0 else 3


async def send_batch(
    api: Any, orders: list[tuple[str, bytes]], key: Ed25519PrivateKey
) -> tuple[int, int]:
    """Sign every order locally, then send the signatures in requests of 500: how many the
    collector took, and how many it refused (each refusal printed)."""
    approvals = [{"command_id": cid, **approval_body(data, key)} for cid, data in orders]
    failed = 0
    for start in range(0, len(approvals), 500):
        answer = await api.call(
            "POST", "/v1/approvals", {"approvals": approvals[start : start + 500]}
        )
        for result in answer["results"]:
            if "error" in result:
                failed += 1
                print(f"  {result['command_id']}: {printable(result['detail'])}", file=sys.stderr)
    print(f"signed {len(approvals) - failed} of {len(approvals)} order(s)", file=sys.stderr)
    return len(approvals) - failed, failed
