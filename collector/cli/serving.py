"""`rmm-collector serve` and `quickstart`."""

import argparse
import asyncio
import gc
import json
import logging
import os
import shlex
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from collector import __version__, accounts
from collector.app import create_app
from collector.cli.clients import issue_enrollment_token
from collector.cli.common import command, local_actor
from collector.guard import GUARD, GuardedSite
from collector.secretbox import SecretBox
from collector.settings import Settings
from collector.store.base import Store
from collector.tokens import hash_token, new_token
from wire.clock import SystemClock

log = logging.getLogger("collector")

QUICKSTART_FILE = "quickstart.json"
DEMO_CLIENT = "Demo Client"
DEMO_PERSON = "admin"


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve_forever(store: Store, settings: Settings, banner: str = "") -> None:
    app = create_app(settings, store=store, clock=SystemClock())
    # aiohttp's keep-alive timer is the idle deadline between requests (collector.guard).
    runner = web.AppRunner(
        app,
        access_log=log if settings.access_log else None,
        handle_signals=False,
        keepalive_timeout=settings.idle_timeout_s,
    )
    await runner.setup()
    site = GuardedSite(
        runner,
        settings.host,
        settings.port,
        app[GUARD],
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


def _cli_path() -> str:
    """How to run this very command from another terminal (the virtualenv is not on PATH)."""
    here = Path(sys.argv[0])
    return shlex.quote(str(here.resolve())) if here.name == "rmm-collector" else "rmm-collector"


def quickstart_banner(
    url: str, db: str, path: Path, demo: dict[str, str], *, person: tuple[str, str, str]
) -> str:
    """What `make run` prints. Lines that start with `$ ` are commands that work pasted as
    they are, in the order shown (a test runs them through `sh`)."""
    cli = _cli_path()
    enroll = json.dumps(
        {
            "enrollment_token": demo["enrollment_token"],
            "hardware_id": "demo-hw-1",
            "hostname": "demo-pc",
            "os": "Linux",
            "kind": "pc",
        }
    )
    api = f"RMM_API_URL={url} RMM_API_TOKEN={demo['admin_token']}"
    person_name, password, secret = person
    return f"""
RMM collector is running at {url}   (state: {db}; stop with Ctrl-C)

  sign in to the pages as:      {person_name}, password {password}
  authenticator secret:         {secret} (the first sign-in shows it as a QR code)
  admin API token:              {demo["admin_token"]}
  '{DEMO_CLIENT}' enrollment token: {demo["enrollment_token"]}
  (all kept in {path}, mode 0600; remove the data/ folder to start afresh)

Try it from another terminal (paste each $ line as it is):
  $ curl -s {url}/healthz
  $ curl -s -X POST {url}/v1/enroll -H 'Content-Type: application/json' -d {shlex.quote(enroll)}
  $ curl -s -H 'Authorization: Bearer {demo["admin_token"]}' {url}/v1/machines

Offboarding takes two people's signatures, made with keys that never touch the collector. Each
operator makes a key on their own machine (it asks for a passphrase) and prints its public line:
  $ {cli} operator keygen --key alice.key
  $ {cli} operator keygen --key bob.key
Pin both lines in every agent's config (operator_keys = ["<alice's line>", "<bob's line>"],
offboard_approvals = 2); register them here to see names beside signatures
({cli} operator add Alice "<alice's line>"). Then Alice asks and signs, and Bob approves:
  $ {api} {cli} remote offboard demo-pc --reason 'demo: laptop returned' --key alice.key --yes
    {api} {cli} remote approve <command id printed above> --key bob.key
"""


async def quickstart(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    """First run: a demo client, an admin token and an admin person to sign in to the pages,
    kept (0600) beside the database; then serve."""
    path = Path(settings.db).resolve().parent / QUICKSTART_FILE
    if path.exists():
        demo = json.loads(path.read_text())
    else:
        client = await store.find_client(DEMO_CLIENT)
        if client is None:
            client = await store.create_client(
                DEMO_CLIENT, now=SystemClock().now(), actor=local_actor()
            )
        enrollment_token, _ = await issue_enrollment_token(store, settings, client.client_id)
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
    if "person" not in demo and await store.find_user(DEMO_PERSON) is None:
        made = await accounts.create_user(
            store,
            DEMO_PERSON,
            "admin",
            box=SecretBox.from_keys_folder(settings.resolved_keys_dir),
            now=SystemClock().now(),
            actor=local_actor(),
        )
        demo["person"] = made.as_json()
        draft = path.with_name(f".{path.name}.new")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(demo, handle)
        os.replace(draft, path)
    person = demo.get("person") or {}
    person_name = person.get("name", DEMO_PERSON)
    password = person.get("password", "(not kept: rmm-collector user reset-mfa or user add)")
    secret = person.get("totp_secret", "-")
    url = f"http://{settings.host}:{settings.port}"
    banner = quickstart_banner(url, settings.db, path, demo, person=(person_name, password, secret))
    await serve_forever(store, settings, banner)


def register(sub: Any) -> None:
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
