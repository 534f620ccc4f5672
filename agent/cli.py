"""`rmm-agent enroll|run|status --config FILE`.

Exit status: 0 success; 1 a runtime failure (collector unreachable during `enroll`, state
unusable); 3 `status` of an agent that is not enrolled, or an `enroll` the collector holds for a
technician's approval; 78 a configuration problem (bad config file, not enrolled and no
`enrollment_token`, enrollment refused), which service managers are told not to restart on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig, ConfigError, default_config_path, load_config
from agent.logs import secrets, setup_logging
from agent.version import agent_version

if TYPE_CHECKING:
    from agent.client import CollectorClient
    from agent.deferred_commands import DeferredCommands
    from agent.probes import Prober
    from agent.spool import Spool
    from agent.state import Credential

log = logging.getLogger("agent")

EX_OK = 0
EX_FAILURE = 1
EX_NOT_ENROLLED = 3
EX_AWAITING_APPROVAL = 3  # `enroll`: the collector holds it for a technician's approval
EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmm-agent",
        description="RMM endpoint agent: reports this machine and its deployment to the collector.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            type=Path,
            default=Path(os.environ.get("RMM_AGENT_CONFIG") or default_config_path()),
            help="agent TOML config (default: $RMM_AGENT_CONFIG or %(default)s)",
        )
        return sub

    enroll = add("enroll", "enroll this machine with the collector using the enrollment token")
    enroll.add_argument(
        "--force",
        action="store_true",
        help="enroll again even if already enrolled (revokes this machine's earlier token)",
    )
    enroll.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run = add("run", "run the agent in the foreground (what the service manager starts)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    status = add("status", "print the agent id, collector, last heartbeat and the spool")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"rmm-agent: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    secrets.add(config.enrollment_token)
    if args.command == "status":
        return _status(config, as_json=args.json)
    setup_logging(args.log_level or config.log_level)
    _warn_if_config_exposed(config)
    if args.command == "enroll":
        return _guarded(config, lambda: _enroll(config, force=args.force))
    return _guarded(config, lambda: _run(config))


def _guarded(config: AgentConfig, action: Any) -> int:
    from agent.enrolling import AgentError
    from agent.state import StateError, exclusive

    try:
        with exclusive(config.state_dir):
            return int(action())
    except AgentError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    except StateError as exc:
        log.error("%s", exc)
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_OK


def _enroll(config: AgentConfig, *, force: bool) -> int:
    from agent.client import AwaitingApproval, CollectorError
    from agent.departure import clear_tombstone, read_tombstone
    from agent.identity import IdentityError
    from agent.state import StateError, StateStore
    from wire.text import printable

    state = StateStore(config.state_dir)
    state.prepare()
    if read_tombstone(config.state_dir) is not None:
        if not force:
            print(
                "this machine was offboarded; use --force to enroll it again (a new coverage "
                "period starts, and the client is billed for it from the next month)",
                file=sys.stderr,
            )
            return EX_FAILURE
        clear_tombstone(config.state_dir)
    try:
        existing = state.load_credential()
    except StateError as exc:
        if not force:
            raise
        log.warning("%s; enrolling without it", exc)
        existing = None
    if existing is not None and not force:
        print(
            f"already enrolled as agent {existing.agent_id} (machine {existing.machine_id}) with "
            f"{existing.collector_url}; use --force to enroll again",
            file=sys.stderr,
        )
        return EX_FAILURE
    try:
        credential = asyncio.run(_enroll_async(config, previous=existing))
    except IdentityError as exc:
        log.error("cannot identify this machine: %s", exc)
        return EX_FAILURE
    except AwaitingApproval as held:
        state.mark_reenroll_pending(held.detail)
        kept = (
            f" This machine keeps its current credential (agent {existing.agent_id}) meanwhile."
            if existing is not None
            else ""
        )
        print(
            "enrollment held: the collector knows this hardware and asks a technician to approve "
            f"enrolling it again ({printable(held.detail)}). A technician runs "
            "`rmm-collector machine approve-reenroll MACHINE_ID` (or approves it on the machine's "
            f"page); `rmm-agent run` keeps asking every few minutes until it is approved.{kept}",
            file=sys.stderr,
        )
        return EX_AWAITING_APPROVAL
    except CollectorError as exc:
        log.error("enrollment failed: %s", exc)
        return EX_FAILURE
    print(f"enrolled: agent_id={credential.agent_id} machine_id={credential.machine_id}")
    return EX_OK


async def _enroll_async(config: AgentConfig, *, previous: Credential | None) -> Credential:
    from agent.enrolling import enroll
    from agent.identity import detect_identity
    from agent.state import StateStore

    identity = await asyncio.to_thread(detect_identity, kind_override=config.kind)
    async with _client(config) as client:
        credential = await enroll(
            config,
            identity,
            client,
            StateStore(config.state_dir),
            retry_sleep=asyncio.sleep,
            attempts=5,
            previous=previous,
        )
    secrets.add(credential.agent_token)
    return credential


def _client(config: AgentConfig) -> CollectorClient:
    from agent.client import CollectorClient, ssl_context

    return CollectorClient(
        config.collector_url,
        ssl=ssl_context(config.ca_file) if config.collector_url.startswith("https:") else None,
        proxy=config.proxy,
        request_timeout=config.request_timeout_s,
        user_agent=f"rmm-agent/{agent_version()}",
    )


def _run(config: AgentConfig) -> int:
    from agent.departure import read_tombstone
    from agent.identity import IdentityError

    tombstone = read_tombstone(config.state_dir)
    if tombstone is not None:
        log.error(
            "this machine was offboarded %s; the agent does not run or enroll again by itself. "
            "To bring it back under management run `rmm-agent enroll --force`.",
            f"({tombstone.damaged})"
            if tombstone.damaged
            else f"at {tombstone.offboarded_at} (command {tombstone.command_id})",
        )
        return EX_CONFIG
    for warning in config.offboard_warnings():
        log.warning("%s", warning)

    try:
        asyncio.run(_serve(config))
    except IdentityError as exc:
        log.error("cannot identify this machine: %s", exc)
        return EX_FAILURE
    return EX_OK


async def _serve(config: AgentConfig) -> None:
    from agent.identity import Host, detect_hostname, detect_identity
    from agent.network import NetworkReader, NetworkWatcher
    from agent.probes import Prober
    from agent.service import Agent
    from agent.spool import Spool
    from agent.state import StateStore
    from wire.clock import SystemClock

    stop = asyncio.Event()
    _install_signal_handlers(stop)
    state = StateStore(config.state_dir)
    await asyncio.to_thread(state.prepare)
    credential = await asyncio.to_thread(state.load_credential)
    if credential is not None:
        secrets.add(credential.agent_token)
    identity = await asyncio.to_thread(detect_identity, kind_override=config.kind)
    spool = await asyncio.to_thread(Spool, config.state_dir, max_events=config.spool_max_events)
    host = Host()
    prober = Prober(config.components)
    async with _client(config) as client:
        handler = await _command_handler(config, client, spool, prober, stop)
        agent = Agent(
            config,
            client=client,
            state=state,
            spool=spool,
            prober=prober,
            identity=identity,
            hostname=lambda: detect_hostname(host),
            stop=stop,
            on_commands=handler,
            on_start=handler.resume,
            on_unauthorized=handler.unauthorized,
            network=NetworkWatcher(NetworkReader(platform.system()).read, clock=SystemClock()),
        )
        handler.attach(agent)
        await agent.serve()
        if agent.credential is not None:
            secrets.add(agent.credential.agent_token)


async def _command_handler(
    config: AgentConfig,
    client: CollectorClient,
    spool: Spool,
    prober: Prober,
    stop: asyncio.Event,
) -> DeferredCommands:
    from agent.deferred_commands import DeferredCommands

    return DeferredCommands(config, client, spool, prober, stop)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def request_stop(name: str) -> None:
        if not stop.is_set():
            log.info("received %s; shutting down", name)
        stop.set()

    if sys.platform == "win32":
        # Service wrappers stop a console program with Ctrl+C / Ctrl+Break.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGBREAK):
            signal.signal(
                number,
                lambda signum, _frame: loop.call_soon_threadsafe(
                    request_stop, signal.Signals(signum).name
                ),
            )
    else:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, request_stop, number.name)


def _warn_if_config_exposed(config: AgentConfig) -> None:
    if os.name != "posix" or not config.enrollment_token:
        return
    try:
        mode = stat.S_IMODE(config.source.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "%s holds the enrollment token but is readable by others (mode %04o); chmod 600 it",
            config.source,
            mode,
        )


def _status(config: AgentConfig, *, as_json: bool) -> int:
    from agent.departure import read_tombstone
    from agent.ledger import CommandLedger
    from agent.spool import inspect_spool
    from agent.state import StateError, StateStore
    from wire.text import printable
    from wire.times import format_instant

    state = StateStore(config.state_dir)
    try:
        credential = state.load_credential()
        known = state.load_status()
        spooled = inspect_spool(config.state_dir)
        tombstone = read_tombstone(config.state_dir)
    except (StateError, PermissionError) as exc:
        print(f"rmm-agent: {exc}", file=sys.stderr)
        return EX_FAILURE
    ledger_problem = CommandLedger(config.state_dir).damaged

    def instant(value: Any) -> str | None:
        return format_instant(value) if value is not None else None

    report: dict[str, Any] = {
        "enrolled": credential is not None,
        "offboarded": None
        if tombstone is None
        else {
            "at": tombstone.offboarded_at,
            "command_id": tombstone.command_id,
            "damaged": tombstone.damaged,
        },
        "ledger_damaged": ledger_problem,
        "agent_id": credential.agent_id if credential else None,
        "machine_id": credential.machine_id if credential else None,
        "hostname": printable(os.environ.get("RMM_AGENT_HOSTNAME") or socket.gethostname()),
        "collector": config.collector_url,
        "reenroll_pending": state.reenroll_pending(),
        "state_dir": str(config.state_dir),
        "last_heartbeat": instant(known.last_heartbeat_at),
        "last_attempt": instant(known.last_attempt_at),
        "last_error": known.last_error,
        "next_heartbeat_s": known.next_heartbeat_s,
        "components": {name: c.status for name, c in sorted(known.components.items())},
        "spool": {
            "events": spooled.events,
            "command_results": spooled.results,
            "oldest": spooled.oldest_at,
            "set_aside": spooled.rejected,
        },
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        lines = [
            f"agent:          {report['agent_id'] or 'not enrolled'}",
            *(
                [
                    f"offboarded:     {tombstone.damaged}"
                    if tombstone.damaged
                    else f"offboarded:     {tombstone.offboarded_at} "
                    f"(command {tombstone.command_id})"
                ]
                if tombstone
                else []
            ),
            *([f"commands:       REFUSED: {ledger_problem}"] if ledger_problem else []),
            f"machine:        {report['machine_id'] or '-'} ({report['hostname']})",
            *(
                ["enrollment:     held for a technician's approval; `run` keeps asking"]
                if report["reenroll_pending"]
                else []
            ),
            f"collector:      {report['collector']}",
            f"last heartbeat: {report['last_heartbeat'] or 'never'}",
        ]
        if known.last_error:
            lines.append(f"last error:     {known.last_error} (at {report['last_attempt']})")
        components = ", ".join(f"{k}={v}" for k, v in report["components"].items())
        lines.append(f"components:     {components or '-'}")
        pending = f"{spooled.events} events, {spooled.results} command results"
        if spooled.oldest_at:
            pending += f" (oldest {spooled.oldest_at})"
        if spooled.rejected:
            pending += f"; {spooled.rejected} refused by the collector and set aside"
        lines.append(f"spooled:        {pending}")
        print("\n".join(lines))
    return EX_OK if credential is not None else EX_NOT_ENROLLED
