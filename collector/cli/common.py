"""What every `rmm-collector` subcommand shares: its refusal type, who ran it, how it prints."""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Any

from collector.settings import Settings, add_arguments
from collector.store.base import Store

Handler = Callable[[Store, Settings, argparse.Namespace], Awaitable[None]]


class CliError(Exception):
    """A refusal the user can fix; printed without a traceback, exit status 2."""


def local_actor() -> str:
    """Who ran a local command, as the audit log records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"local:{user}"


def emit(payload: Any, as_json: bool, text: str) -> None:
    """JSON with `--json`, else the human text."""
    print(json.dumps(payload) if as_json else text)


def command(
    subparsers: Any,
    name: str,
    help_text: str,
    handler: Handler,
    settings_flags: tuple[str, ...] | None = ("db",),
) -> argparse.ArgumentParser:
    """A subcommand acting on the state: its settings flags, and the handler it runs."""
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    add_arguments(p, settings_flags)
    p.set_defaults(handler=handler)
    return p
