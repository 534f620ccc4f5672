"""`rmm-collector`: serve the API; manage clients, tokens and keys in the state named by --db.

One module per family of subcommands (`clients`, `serving`, `keys`, ...), each registering its
parsers; `collector.remote` is the technicians' client of the HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

from collector import __version__, remote
from collector.cli import clients, keys, machines, operators, serving, users
from collector.cli.common import CliError
from collector.settings import Settings, SettingsError, load
from collector.store import open_store
from collector.store.base import StoreError

FAMILIES = (serving, clients, keys, machines, operators, users)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmm-collector",
        description="The NOC's collector: agent enrollment and heartbeats, inventory and the API.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        family.register(sub)
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
    local_handler = getattr(args, "local_handler", None)
    if local_handler is not None:
        # Commands that touch no collector state (an operator's own key).
        result: int = local_handler(args)
        return result
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
