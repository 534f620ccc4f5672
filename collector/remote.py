"""`rmm-collector remote`: the technicians' client. It speaks only the HTTP API, with their own
token, so it works from their desk and everything it does is audited under their name."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from collector import operator_keys, remote_orders, remote_views
from collector.tables import fields
from wire.text import command_line, printable

TOKEN_ENV = "RMM_API_TOKEN"
URL_ENV = "RMM_API_URL"
FINAL_STATES = ("offboarded", "offboard_failed", "cancelled")
OPEN_STATES = ("awaiting_approval", "offboard_pending")

# Exit statuses, as `remote --help` tells them.
EXIT_DECLINED = 1
EXIT_ERROR = 2
EXIT_FAILED = 3
EXIT_STATUSES = """\
exit status:
  0  done (with --wait: the machine is offboarded)
  1  declined at the confirmation prompt; nothing was requested or signed
  2  refused by the collector, not reachable, a bad key, or still open at --timeout
  3  the offboard failed or was cancelled (the failed step, its exit status and the
     end of its output are printed), or some approvals of a bulk order were refused
"""


class RemoteError(Exception):
    """The API refused or could not be reached; the message is for the technician."""


class Api:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with (
                asyncio.timeout(30),
                self._session.request(
                    method, self._url + path, json=body, headers=self._headers
                ) as response,
            ):
                payload = await response.json(content_type=None)
                if response.status >= 400:
                    detail = payload.get("detail") if isinstance(payload, dict) else payload
                    raise RemoteError(f"{response.status}: {detail}")
                return payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RemoteError(f"cannot reach the collector at {self._url}: {exc}") from exc


async def resolve_machine(api: Api, name_or_id: str) -> dict[str, Any]:
    """A machine by id, or by its exact hostname when that names exactly one machine."""
    try:
        machine: dict[str, Any] = await api.call("GET", f"/v1/machines/{quote(name_or_id)}")
        return machine
    except RemoteError as exc:
        if not str(exc).startswith("404"):
            raise
    found = await api.call("GET", f"/v1/machines?hostname={quote(name_or_id)}&limit=100")
    exact = [m for m in found["machines"] if m["hostname"].lower() == name_or_id.lower()]
    if not exact:
        raise RemoteError(f"no machine with id or hostname {name_or_id!r}")
    if len(exact) > 1:
        ids = ", ".join(f"{m['machine_id']} ({m['client_id']})" for m in exact)
        raise RemoteError(f"hostname {name_or_id!r} names several machines; use an id: {ids}")
    only: dict[str, Any] = exact[0]
    return only


async def client_names(api: Api) -> dict[str, str]:
    """Client ids to names, for people's tables; ids alone if the token cannot list them."""
    try:
        listed = await api.call("GET", "/v1/clients")
    except RemoteError:
        return {}
    return {c["client_id"]: c["name"] for c in listed.get("clients", [])}


async def cmd_machines(api: Api, args: argparse.Namespace) -> int:
    query = "&".join(
        f"{k}={quote(v)}"
        for k, v in (("client", args.client), ("state", args.state), ("hostname", args.hostname))
        if v
    )
    payload = await api.call("GET", f"/v1/machines?{query}")
    if args.json:
        print(json.dumps(payload))
        return 0
    print(remote_views.machines_table(payload["machines"], await client_names(api)))
    if payload.get("next_cursor"):
        print("(more machines: narrow the list with --client, --state or --hostname)")
    return 0


async def cmd_machine(api: Api, args: argparse.Namespace) -> int:
    machine = await resolve_machine(api, args.machine)
    if args.json:
        print(json.dumps(machine))
    else:
        print(remote_views.machine_summary(machine, await client_names(api)))
    return 0


async def cmd_command(api: Api, args: argparse.Namespace) -> int:
    if args.wait:
        return await wait_for_end(api, args.command_id, args)
    command = await api.call("GET", f"/v1/commands/{quote(args.command_id)}")
    if args.json:
        print(json.dumps(command))
    else:
        print(remote_views.command_summary(command, await client_names(api)))
    return 0


def _steps_so_far(command: dict[str, Any]) -> list[dict[str, Any]]:
    result = command.get("result") or {}
    progress = command.get("progress") or {}
    steps: list[dict[str, Any]] = result.get("steps") or progress.get("steps") or []
    return steps


async def follow(api: Api, command_id: str, timeout_s: float, interval_s: float) -> dict[str, Any]:
    """Poll the command until it ends, printing each change of state or delivery and each step
    the agent reports as it runs."""
    deadline = time.monotonic() + timeout_s
    seen: tuple[Any, ...] = ()
    steps_shown = 0
    running_shown: Any = None
    while True:
        command: dict[str, Any] = await api.call("GET", f"/v1/commands/{quote(command_id)}")
        progress = (command["state"], command["delivered_at"], command["rejections"])
        if progress != seen:
            seen = progress
            note = "waiting for the machine to check in"
            if command["delivered_at"]:
                note = f"delivered to the agent at {command['delivered_at']}"
            if command["rejections"]:
                note += f"; the agent refused {command['rejections']} delivery(ies)"
            print(f"  {command['state']}: {note}", file=sys.stderr, flush=True)
        steps = _steps_so_far(command)
        for step in steps[steps_shown:]:
            print(f"  {remote_views.progress_line(step)}", file=sys.stderr, flush=True)
        steps_shown = max(steps_shown, len(steps))
        running = (command.get("progress") or {}).get("running")
        if running and running != running_shown and command["state"] not in FINAL_STATES:
            print(
                f"  running {printable(running.get('component'))}: "
                f"`{command_line(running.get('argv') or [])}`",
                file=sys.stderr,
                flush=True,
            )
        running_shown = running
        if command["state"] in FINAL_STATES:
            return command
        if time.monotonic() >= deadline:
            raise RemoteError(
                f"command {command_id} is still {command['state']} after "
                f"{timeout_s:.0f} s; follow it with `remote command {command_id}`"
            )
        await asyncio.sleep(interval_s)


async def wait_for_end(api: Api, command_id: str, args: argparse.Namespace) -> int:
    """Follow a command to its end and say how it ended: on failure the failed step, its exit
    status and the end of its output (on stderr with --json, whose stdout stays the command)."""
    started = time.monotonic()
    command = await follow(api, command_id, args.timeout, args.poll)
    failure = remote_views.failure_report(command)
    if args.json:
        print(json.dumps(command))
        if failure:
            print("\n".join(failure), file=sys.stderr)
    else:
        print(f"{command['state']} after {time.monotonic() - started:.1f} s")
        if failure:
            print("\n".join(failure))
    return 0 if command["state"] == "offboarded" else EXIT_FAILED


async def cmd_offboard(api: Api, args: argparse.Namespace) -> int:
    key = remote_orders.load_key(args) if args.key else None
    if args.client:
        return await _offboard_client(api, args, key)
    if not args.machine:
        raise RemoteError("name the machine to offboard, or --client NAME --all")
    machine = await resolve_machine(api, args.machine)
    if not args.yes and sys.stdin.isatty():
        answer = await asyncio.to_thread(
            input,
            f"Offboard {printable(machine['hostname'])} ({machine['machine_id']}) of client "
            f"{machine['client_id']}? This uninstalls every component. [y/N] ",
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing requested", file=sys.stderr)
            return EXIT_DECLINED
    body: dict[str, Any] = {"reason": args.reason}
    if args.ticket:
        body["ticket"] = args.ticket
    accepted = await api.call("POST", f"/v1/machines/{quote(machine['machine_id'])}/offboard", body)
    print(
        f"offboard of {printable(machine['hostname'])} requested: command "
        f"{accepted['command_id']} ({accepted['state']})",
        file=sys.stderr,
    )
    if key is not None and accepted.get("order"):
        _, order = remote_orders.read_order({**accepted, "machine_id": machine["machine_id"]})
        if order.reason != args.reason or order.ticket != args.ticket:
            raise remote_orders.OrderCheckFailed(
                "the order the collector made does not say what was asked; nothing was signed"
            )
        accepted = {**accepted, **await remote_orders.sign_command(api, accepted, key)}
        print(f"signed as requester: {remote_orders.signatures_line(accepted)}", file=sys.stderr)
    if accepted["state"] == "awaiting_approval":
        print(
            "a second operator approves it with: rmm-collector remote approve "
            f"{accepted['command_id']} --key THEIR_KEY_FILE",
            file=sys.stderr,
        )
    if args.wait:
        return await wait_for_end(api, accepted["command_id"], args)
    if args.json:
        print(json.dumps(accepted))
    else:
        rows: list[tuple[str, object]] = [
            ("command", accepted["command_id"]),
            ("machine", f"{machine['hostname']} ({machine['machine_id']})"),
            ("state", accepted["state"]),
        ]
        if accepted.get("approvals_required"):
            rows.append(("approvals", remote_orders.signatures_line(accepted)))
        print(fields(rows))
    return 0


async def _offboard_client(api: Api, args: argparse.Namespace, key: Any) -> int:
    """Every live machine of a client as one bulk order: the count first, then one request,
    every order signed locally in one go."""
    if not args.all:
        raise RemoteError("offboarding a client's machines needs --all (every live machine)")
    clients = await api.call("GET", "/v1/clients")
    wanted = args.client.lower()
    found = [c for c in clients["clients"] if wanted in (c["client_id"], c["name"].lower())]
    if len(found) != 1:
        raise RemoteError(f"no single client named or with id {args.client!r}")
    client = found[0]
    live = await api.call("GET", f"/v1/machines?client={quote(client['client_id'])}&limit=10000")
    machines = [m for m in live["machines"] if m["state"] not in ("offboarded", "moved")]
    print(
        f"client {printable(client['name'])}: {len(machines)} live machine(s) will be "
        "offboarded, every component uninstalled",
        file=sys.stderr,
    )
    if not machines:
        if args.json:
            print(json.dumps({"batch_id": None, "commands": 0}))
        return 0
    if not await remote_orders.confirm(f"Order all {len(machines)} offboards?", args):
        print("nothing requested", file=sys.stderr)
        return EXIT_DECLINED
    body: dict[str, Any] = {"reason": args.reason, "expected_count": len(machines)}
    if args.ticket:
        body["ticket"] = args.ticket
    batch = await api.call("POST", f"/v1/clients/{quote(client['client_id'])}/offboard", body)
    print(f"bulk offboard {batch['batch_id']}: {len(batch['commands'])} order(s)", file=sys.stderr)
    status = 0
    if key is not None:
        orders = []
        for command in batch["commands"]:
            if command.get("order") and command["state"] in OPEN_STATES:
                data, _ = remote_orders.read_order(command)
                orders.append((command["command_id"], data))
        _, failed = await remote_orders.send_batch(api, orders, key)
        status = EXIT_FAILED if failed else 0
    print(
        f"a second operator approves them with: rmm-collector remote approve --batch "
        f"{batch['batch_id']} --key THEIR_KEY_FILE",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"batch_id": batch["batch_id"], "commands": len(batch["commands"])}))
    else:
        print(fields([("batch", batch["batch_id"]), ("orders", len(batch["commands"]))]))
    return status


async def cmd_approve(api: Api, args: argparse.Namespace) -> int:
    if args.wait and args.batch:
        raise RemoteError("--wait follows one command; follow a bulk order's with `remote command`")
    status = await remote_orders.cmd_approve(api, args)
    if status != 0 or not args.wait:
        return status
    return await wait_for_end(api, args.command_id, args)


async def cmd_exposure(api: Api, args: argparse.Namespace) -> int:
    report = await api.call("GET", "/v1/reports/exposure")
    if args.json:
        print(json.dumps(report))
    else:
        print(remote_views.exposure_report(report, await client_names(api)))
    return 0


def _json_flag(parser: argparse.ArgumentParser) -> None:
    """`--json` after the action too (`remote offboard HOST --json`); not giving it there keeps
    what was given before the action."""
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON"
    )


def _wait_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"follow {what} until it ends; on failure print the failed step, its exit status "
        "and the end of its output, and exit with status 3",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds to wait (default 3600)"
    )
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between checks")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    remote: argparse.ArgumentParser = sub.add_parser(
        "remote",
        help="technicians' client over the HTTP API (audited under your token)",
        description="Talk to a collector over its API with your own token. The token is read "
        f"from {TOKEN_ENV} or --token-file (keeps it out of shell history). Every action prints "
        "a table or a summary; with --json, the API's JSON.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remote.add_argument(
        "--url", default=os.environ.get(URL_ENV), help=f"collector URL (env {URL_ENV})"
    )
    remote.add_argument("--token-file", type=Path, help="file holding your API token")
    remote.add_argument("--token", help=f"your API token (prefer {TOKEN_ENV} or --token-file)")
    remote.add_argument("--json", action="store_true", help="print the API's JSON")
    actions = remote.add_subparsers(dest="remote_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_STATUSES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _json_flag(p)
        return p

    p = action("machines", "list machines")
    p.add_argument("--client")
    p.add_argument("--state")
    p.add_argument("--hostname", help="part of the hostname")
    p.set_defaults(remote_handler=cmd_machines)
    p = action("machine", "show one machine (id or exact hostname)")
    p.add_argument("machine")
    p.set_defaults(remote_handler=cmd_machine)
    p = action("offboard", "request an offboard and optionally follow it")
    p.add_argument("machine", nargs="?", help="machine id or exact hostname")
    p.add_argument(
        "--key", type=Path, metavar="FILE", help="your operator key: sign the order as requester"
    )
    p.add_argument("--client", help="with --all: every live machine of this client (name or id)")
    p.add_argument("--all", action="store_true", help="with --client: one order per machine")
    p.add_argument("--reason", required=True, help="why (kept in the audit log)")
    p.add_argument("--ticket", help="ticket reference")
    _wait_flags(p, "the offboard")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(remote_handler=cmd_offboard)
    p = action("approve", "sign an offboard order (second operator)")
    p.add_argument("command_id", nargs="?", help="the command whose order to sign")
    p.add_argument("--batch", metavar="ID", help="sign every order of a bulk offboard")
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="your operator key")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _wait_flags(p, "the approved offboard")
    p.set_defaults(remote_handler=cmd_approve)
    p = action("command", "show one command: its state, steps and, if it failed, why")
    p.add_argument("command_id")
    _wait_flags(p, "the command")
    p.set_defaults(remote_handler=cmd_command)
    p = action("exposure", "licence exposure report")
    p.set_defaults(remote_handler=cmd_exposure)
    return remote


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        return str(args.token_file.read_text().strip())
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise RemoteError(f"give your API token in {TOKEN_ENV} or with --token-file")
    return str(token)


def check_url(url: str) -> None:
    """The token goes only over HTTPS, or plain HTTP to this machine itself (as the agent)."""
    parsed = urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname:
        host = parsed.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
        raise RemoteError(f"refusing to send your token over plain HTTP to {host}: use https://")
    raise RemoteError(f"{url!r} is not an http(s) URL of a collector")


async def _run(args: argparse.Namespace) -> int:
    if not args.url:
        raise RemoteError(f"give the collector's URL with --url or {URL_ENV}")
    check_url(args.url)
    token = _token(args)
    async with aiohttp.ClientSession() as session:
        result: int = await args.remote_handler(Api(session, args.url, token), args)
        return result


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except (
        RemoteError,
        remote_orders.OrderCheckFailed,
        operator_keys.OperatorKeyError,
    ) as exc:
        print(f"rmm-collector remote: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
