"""`rmm-collector keys ...`: the collector's command-signing keys (files, mode 0600)."""

import argparse
import sys
from typing import Any

from collector.cli.common import CliError, command, local_actor
from collector.keys import KeyFileError, KeyRing
from collector.settings import Settings
from collector.store.base import AuditEntry, Store
from wire.clock import SystemClock


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


def register(sub: Any) -> None:
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
