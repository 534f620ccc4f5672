"""`rmm-collector user ...`: the people who sign in to the web pages."""

from __future__ import annotations

import argparse
from typing import Any

from collector import accounts
from collector.cli.common import CliError, command, emit, local_actor
from collector.secretbox import SecretBox
from collector.settings import Settings
from collector.store.base import ROLES, Conflict, NotFound, Role, Store, UserInfo
from wire.clock import SystemClock
from wire.times import format_instant


def _row(user: UserInfo) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "clients": None if user.clients is None else sorted(user.clients),
        "created_at": format_instant(user.created_at),
        "disabled_at": None if user.disabled_at is None else format_instant(user.disabled_at),
        "mfa_enrolled": user.mfa_enrolled,
        "must_change_password": user.must_change_password,
    }


async def user_add(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    problem = accounts.name_problem(args.name)
    if problem:
        raise CliError(problem)
    role: Role = args.role
    client_ids = []
    for name_or_id in args.client or ():
        client = await store.find_client(name_or_id)
        if client is None:
            raise CliError(f"no client named or with id {name_or_id!r} (see `client list`)")
        client_ids.append(client.client_id)
    try:
        made = await accounts.create_user(
            store,
            args.name,
            role,
            clients=client_ids,
            box=SecretBox.from_keys_folder(settings.resolved_keys_dir),
            now=SystemClock().now(),
            actor=local_actor(),
        )
    except Conflict as exc:
        raise CliError(str(exc)) from exc
    emit(
        made.as_json(),
        args.json,
        f"person {args.name!r} ({role}) added; shown once:\n"
        f"password (to be changed at first sign-in): {made.password}\n"
        f"TOTP secret: {made.totp_secret}\n"
        f"authenticator URI: {made.totp_uri}\n"
        "The first sign-in page also shows the URI as a QR code.",
    )


async def user_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    users = [_row(u) for u in await store.list_users()]
    lines = [
        f"{u['name']}  {u['role']}  "
        f"{'disabled' if u['disabled_at'] else 'active'}"
        f"{'' if u['mfa_enrolled'] else '  (second factor not set up yet)'}"
        f"{'' if u['clients'] is None else '  clients: ' + ', '.join(u['clients'])}"
        for u in users
    ]
    emit({"users": users}, args.json, "\n".join(lines) or "no people yet")


async def user_disable(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    try:
        user = await store.disable_user(args.name, now=SystemClock().now(), actor=local_actor())
    except NotFound as exc:
        raise CliError(str(exc)) from exc
    emit(_row(user), args.json, f"person {args.name!r} disabled; their sessions have ended")


async def user_reset_mfa(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    try:
        made = await accounts.reset_mfa(
            store,
            args.name,
            box=SecretBox.from_keys_folder(settings.resolved_keys_dir),
            now=SystemClock().now(),
            actor=local_actor(),
        )
    except NotFound as exc:
        raise CliError(str(exc)) from exc
    payload = {k: v for k, v in made.as_json().items() if k != "password"}
    emit(
        payload,
        args.json,
        f"second factor of {args.name!r} reset; their sessions and recovery codes have ended.\n"
        f"new TOTP secret (shown once): {made.totp_secret}\n"
        f"authenticator URI: {made.totp_uri}",
    )


def register(sub: Any) -> None:
    user = sub.add_parser("user", help="people who sign in to the web pages")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    p = command(
        user_sub,
        "add",
        "add a person; print their password and TOTP secret once",
        user_add,
        ("db", "keys_dir"),
    )
    p.add_argument("name", help="the user name they sign in with; the actor in the audit log")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="limit the person to this client (name or id; repeatable; default every client)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(user_sub, "list", "list people (never their secrets)", user_list)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(user_sub, "disable", "stop a person signing in; end their sessions", user_disable)
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        user_sub,
        "reset-mfa",
        "give a person a new TOTP secret (lost phone); print it once",
        user_reset_mfa,
        ("db", "keys_dir"),
    )
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
