"""`rmm-collector`: serve the API; manage clients, tokens and keys in the state named by --db."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from collector import __version__, remote
from collector.app import create_app
from collector.keys import KeyFileError, KeyRing
from collector.settings import Settings, SettingsError, add_arguments, load
from collector.store import open_store
from collector.store.base import ROLES, AuditEntry, Conflict, Role, Store, StoreError
from collector.tokens import hash_token, new_token
from wire.clock import SystemClock
from wire.times import format_instant

log = logging.getLogger("collector")

QUICKSTART_FILE = "quickstart.json"
DEMO_CLIENT = "Demo Client"


class CliError(Exception):
    """A refusal the user can fix; printed without a traceback, exit status 2."""


def local_actor() -> str:
    """Who ran a local command, as the audit log records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"local:{user}"


def _print(payload: Any, as_json: bool, text: str) -> None:
    print(json.dumps(payload, indent=None if as_json else 2) if as_json else text)


# clients and enrollment tokens


async def _issue_enrollment_token(
    store: Store, settings: Settings, client_id: str
) -> tuple[str, str]:
    token = new_token("enrollment")
    now = SystemClock().now()
    info = await store.add_enrollment_token(
        client_id,
        hash_token(token),
        expires_at=now + timedelta(days=settings.enrollment_token_ttl_days),
        now=now,
        actor=local_actor(),
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
    token, expires = await _issue_enrollment_token(store, settings, client.client_id)
    payload = {"client_id": client.client_id, "enrollment_token": token, "expires_at": expires}
    _print(
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
    _print({"clients": rows}, args.json, "\n".join(lines) or "no clients yet")


async def client_new_token(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    client = await _find_client(store, args.client)
    token, expires = await _issue_enrollment_token(store, settings, client.client_id)
    payload = {"client_id": client.client_id, "enrollment_token": token, "expires_at": expires}
    _print(
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
    _print({"revoked": count}, args.json, f"revoked {count} enrollment token(s) of {client.name!r}")


# API tokens


async def token_add(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    role: Role = args.role
    token = new_token("api")
    try:
        await store.add_api_token(
            args.name, role, hash_token(token), now=SystemClock().now(), actor=local_actor()
        )
    except Conflict as exc:
        raise CliError(str(exc)) from exc
    _print(
        {"name": args.name, "role": role, "token": token},
        args.json,
        f"API token {args.name!r} ({role}), shown once:\n{token}",
    )


async def token_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    tokens = [
        {
            "name": t.name,
            "role": t.role,
            "created_at": format_instant(t.created_at),
            "revoked_at": None if t.revoked_at is None else format_instant(t.revoked_at),
        }
        for t in await store.list_api_tokens()
    ]
    lines = [
        f"{t['name']}  {t['role']}  {'revoked' if t['revoked_at'] else 'active'}" for t in tokens
    ]
    _print({"tokens": tokens}, args.json, "\n".join(lines) or "no API tokens yet")


async def token_revoke(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    if not await store.revoke_api_token(args.name, now=SystemClock().now(), actor=local_actor()):
        raise CliError(f"no active API token named {args.name!r}")
    print(f"revoked API token {args.name!r}")


# serving


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve_forever(store: Store, settings: Settings, banner: str = "") -> None:
    app = create_app(settings, store=store, clock=SystemClock())
    runner = web.AppRunner(
        app, access_log=log if settings.access_log else None, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        ssl_context=_tls_context(settings),
        backlog=2048,
        reuse_address=True,
    )
    await site.start()
    # Long-lived state (token cache, key ring, routes) is built: keep the collector from
    # scanning it again and again, and collect young objects less often under load.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    scheme = "https" if settings.tls_cert else "http"
    log.info(
        "collector %s listening on %s://%s:%d (state: %s)",
        __version__,
        scheme,
        settings.host,
        settings.port,
        settings.db if not settings.is_postgres else "postgresql",
    )
    if banner:
        print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: flushing buffered heartbeats")
        await runner.cleanup()


async def serve(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    await serve_forever(store, settings)


async def quickstart(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    """First run: a demo client and an admin token, kept (0600) beside the database; then serve."""
    path = Path(settings.db).resolve().parent / QUICKSTART_FILE
    if path.exists():
        demo = json.loads(path.read_text())
    else:
        client = await store.find_client(DEMO_CLIENT)
        if client is None:
            client = await store.create_client(
                DEMO_CLIENT, now=SystemClock().now(), actor=local_actor()
            )
        enrollment_token, _ = await _issue_enrollment_token(store, settings, client.client_id)
        admin_token = new_token("api")
        await store.add_api_token(
            f"quickstart-admin-{client.client_id[:8]}",
            "admin",
            hash_token(admin_token),
            now=SystemClock().now(),
            actor=local_actor(),
        )
        demo = {
            "client_id": client.client_id,
            "enrollment_token": enrollment_token,
            "admin_token": admin_token,
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(demo, handle)
    url = f"http://{settings.host}:{settings.port}"
    banner = f"""
RMM collector is running at {url}   (state: {settings.db}; stop with Ctrl-C)

  admin API token:              {demo["admin_token"]}
  '{DEMO_CLIENT}' enrollment token: {demo["enrollment_token"]}
  (both kept in {path}, mode 0600; remove the data/ folder to start afresh)

Try it from another terminal:
  curl -s {url}/healthz
  curl -s -X POST {url}/v1/enroll -d '{{"enrollment_token": "{demo["enrollment_token"]}", \\
       "hardware_id": "demo-hw-1", "hostname": "demo-pc", "os": "Linux", "kind": "pc"}}'
  curl -s -H 'Authorization: Bearer {demo["admin_token"]}' {url}/v1/machines
"""
    await serve_forever(store, settings, banner)


# command-signing keys


def _keyring(settings: Settings) -> KeyRing:
    keyring = KeyRing(settings.resolved_keys_dir)
    try:
        keyring.load()
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    return keyring


async def keys_generate(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    keyring = _keyring(settings)
    key = keyring.generate(SystemClock().now())
    await store.add_audit(
        AuditEntry(
            SystemClock().now(),
            local_actor(),
            "key.generated",
            key.key_id,
            {"folder": str(keyring.folder)},
        )
    )
    print(key.pin)
    print(
        f"new signing key {key.key_id} in {keyring.folder}; pin the line above in every "
        "agent's command_keys before retiring an older key",
        file=sys.stderr,
    )


async def keys_show(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    keys = _keyring(settings).active
    if not keys:
        print("no active signing key: run `rmm-collector keys generate`", file=sys.stderr)
    for key in keys:
        print(key.pin)


async def keys_retire(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    keyring = _keyring(settings)
    try:
        key = keyring.retire(args.key_id)
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    await store.add_audit(
        AuditEntry(SystemClock().now(), local_actor(), "key.retired", key.key_id, {})
    )
    left = len(keyring.active)
    print(f"retired {key.key_id}; {left} active key(s) left", file=sys.stderr)
    if not left:
        print("warning: no active key is left, so no command can be signed", file=sys.stderr)


# argument parsing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmm-collector",
        description="The NOC's collector: agent enrollment and heartbeats, inventory and the API.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        subparsers: Any,
        name: str,
        help_text: str,
        handler: Any,
        settings_flags: tuple[str, ...] | None = ("db",),
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help_text, description=help_text
        )
        add_arguments(p, settings_flags)
        p.set_defaults(handler=handler)
        return p

    command(
        sub, "serve", "serve the HTTP API (settings from flags or RMM_COLLECTOR_*)", serve, None
    )
    command(
        sub,
        "quickstart",
        "serve with a demo client and an admin token (used by `make run`)",
        quickstart,
        None,
    )

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
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(token_sub, "list", "list API tokens (never the secrets)", token_list)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(token_sub, "revoke", "revoke an API token by name", token_revoke)
    p.add_argument("name")

    keys = sub.add_parser("keys", help="command-signing keys (Ed25519, files mode 0600)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    command(
        keys_sub,
        "generate",
        "create a new signing key; agents must pin it before it is used",
        keys_generate,
        ("db", "keys_dir"),
    )
    command(
        keys_sub,
        "show",
        "print '<key_id>:<base64 public key>' per active key, to pin in agents",
        keys_show,
        ("db", "keys_dir"),
    )
    p = command(
        keys_sub,
        "retire",
        "stop signing with a key (after agents pin its successor)",
        keys_retire,
        ("db", "keys_dir"),
    )
    p.add_argument("key_id")
    remote.add_parser(sub)
    return parser


async def _run(args: argparse.Namespace, settings: Settings) -> None:
    try:
        store = await open_store(settings.db)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    try:
        await args.handler(store, settings, args)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "remote":
        return remote.run(args)
    try:
        settings = load(args)
    except SettingsError as exc:
        print(f"rmm-collector: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.command in ("serve", "quickstart"):
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_run(args, settings))
    except CliError as exc:
        print(f"rmm-collector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
