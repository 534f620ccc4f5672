"""`rmm-collector client ...` and `token ...`: clients, enrollment tokens, API tokens."""

import argparse
from datetime import timedelta
from typing import Any

from collector.cli.common import CliError, command, emit, local_actor
from collector.settings import Settings
from collector.store.base import ROLES, Conflict, Role, Store
from collector.tokens import hash_token, new_token
from wire.clock import SystemClock
from wire.times import format_instant


async def issue_enrollment_token(
    store: Store, settings: Settings, client_id: str, max_uses: int | None = None
) -> tuple[str, str]:
    token = new_token("enrollment")
    now = SystemClock().now()
    info = await store.add_enrollment_token(
        client_id,
        hash_token(token),
        expires_at=now + timedelta(days=settings.enrollment_token_ttl_days),
        now=now,
        actor=local_actor(),
        max_uses=max_uses,
    )
    return token, format_instant(info.expires_at)


async def _find_client(store: Store, name_or_id: str) -> Any:
    client = await store.find_client(name_or_id)
    if client is None:
        raise CliError(
            f"no client named or with id {name_or_id!r} (see `rmm-collector client list`)"
        )
    return client


async def client_add(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    name = args.name.strip()
    if not name:
        raise CliError("the client name must not be empty")
    try:
        client = await store.create_client(name, now=SystemClock().now(), actor=local_actor())
    except Conflict as exc:
        raise CliError(str(exc)) from exc
    token, expires = await issue_enrollment_token(store, settings, client.client_id, args.max_uses)
    payload = {
        "client_id": client.client_id,
        "enrollment_token": token,
        "expires_at": expires,
        "max_uses": args.max_uses,
    }
    emit(
        payload,
        args.json,
        f"client {name!r} added: {client.client_id}\n"
        f"enrollment token (shown once, valid until {expires}):\n{token}",
    )


async def client_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    clients = await store.list_clients()
    rows = []
    for client in clients:
        tokens = await store.list_enrollment_tokens(client.client_id)
        rows.append(
            {
                "client_id": client.client_id,
                "name": client.name,
                "created_at": format_instant(client.created_at),
                "enrollment_tokens": [
                    {
                        "token_id": t.token_id,
                        "expires_at": format_instant(t.expires_at),
                        "revoked": t.revoked_at is not None,
                        "max_uses": t.max_uses,
                        "uses": t.uses,
                    }
                    for t in tokens
                ],
            }
        )
    lines = []
    for client, row in zip(clients, rows, strict=True):
        tokens = await store.list_enrollment_tokens(client.client_id)
        active = sum(t.revoked_at is None for t in tokens)
        lines.append(f"{row['client_id']}  {row['name']}  ({active} active enrollment token(s))")
    emit({"clients": rows}, args.json, "\n".join(lines) or "no clients yet")


async def client_new_token(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    client = await _find_client(store, args.client)
    token, expires = await issue_enrollment_token(store, settings, client.client_id, args.max_uses)
    payload = {
        "client_id": client.client_id,
        "enrollment_token": token,
        "expires_at": expires,
        "max_uses": args.max_uses,
    }
    emit(
        payload,
        args.json,
        f"new enrollment token for {client.name!r} (shown once, valid until {expires}):\n{token}",
    )


async def client_revoke_token(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    client = await _find_client(store, args.client)
    count = await store.revoke_enrollment_tokens(
        client.client_id, token_id=args.token_id, now=SystemClock().now(), actor=local_actor()
    )
    if args.token_id and not count:
        raise CliError(f"no active enrollment token {args.token_id!r} for {client.name!r}")
    emit({"revoked": count}, args.json, f"revoked {count} enrollment token(s) of {client.name!r}")


# API tokens


async def token_add(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    role: Role = args.role
    names = args.client or []
    if names and role == "admin":
        raise CliError("an admin token acts on every client; limit a technician or viewer token")
    clients = [await _find_client(store, name) for name in names]
    token = new_token("api")
    try:
        await store.add_api_token(
            args.name,
            role,
            hash_token(token),
            now=SystemClock().now(),
            actor=local_actor(),
            clients=[c.client_id for c in clients],
        )
    except Conflict as exc:
        raise CliError(str(exc)) from exc
    scope = sorted(c.name for c in clients)
    emit(
        {"name": args.name, "role": role, "token": token, "clients": scope or None},
        args.json,
        f"API token {args.name!r} ({role}"
        + (f", limited to {', '.join(scope)}" if scope else "")
        + f"), shown once:\n{token}",
    )


async def token_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    tokens = [
        {
            "name": t.name,
            "role": t.role,
            "created_at": format_instant(t.created_at),
            "revoked_at": None if t.revoked_at is None else format_instant(t.revoked_at),
            "clients": None if t.clients is None else sorted(t.clients),
        }
        for t in await store.list_api_tokens()
    ]
    lines = [
        f"{t['name']}  {t['role']}  {'revoked' if t['revoked_at'] else 'active'}" for t in tokens
    ]
    emit({"tokens": tokens}, args.json, "\n".join(lines) or "no API tokens yet")


async def token_revoke(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    if not await store.revoke_api_token(args.name, now=SystemClock().now(), actor=local_actor()):
        raise CliError(f"no active API token named {args.name!r}")
    print(f"revoked API token {args.name!r}")


# serving


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _max_uses_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-uses",
        type=_positive,
        metavar="N",
        help="the token enrolls at most N machines (default: no limit until it expires)",
    )


def register(sub: Any) -> None:
    client = sub.add_parser("client", help="clients and their enrollment tokens")
    client_sub = client.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    p = command(
        client_sub,
        "add",
        "add a client and print its first enrollment token",
        client_add,
        ("db", "enrollment_token_ttl_days"),
    )
    p.add_argument("name", help="the client's name, unique")
    _max_uses_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(client_sub, "list", "list clients and their enrollment tokens", client_list)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        client_sub,
        "new-token",
        "issue another enrollment token for a client",
        client_new_token,
        ("db", "enrollment_token_ttl_days"),
    )
    p.add_argument("client", help="client name or id")
    _max_uses_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        client_sub,
        "revoke-token",
        "revoke a client's enrollment tokens (all, or one)",
        client_revoke_token,
    )
    p.add_argument("client", help="client name or id")
    p.add_argument("--token-id", help="revoke only this token (ids from `client list`)")
    p.add_argument("--json", action="store_true", help="print JSON")

    token = sub.add_parser("token", help="API tokens for people and jobs")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = command(token_sub, "add", "add an API token with a role and print it once", token_add)
    p.add_argument("name", help="who or what uses the token; shown as the actor in the audit log")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="limit the token to this client's machines (repeatable; default: every client)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(token_sub, "list", "list API tokens (never the secrets)", token_list)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(token_sub, "revoke", "revoke an API token by name", token_revoke)
    p.add_argument("name")
