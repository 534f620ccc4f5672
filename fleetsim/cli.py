"""`rmm-fleetsim`: enroll, seed and run a fleet of virtual agents against real collectors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.store.base import StoreError
from fleetsim.enroll import EnrollReport, enroll_into_database, enroll_over_http
from fleetsim.fleet import FleetError, load_agents, save_agents
from fleetsim.load import LoadPlan, LoadReport, run_load
from fleetsim.people import (
    LossReport,
    command_states,
    find_lost,
    last_seen_by_machine,
    request_offboards,
)
from wire.signing import parse_pin

ENROLLMENT_TOKEN_ENV = "RMM_FLEETSIM_ENROLLMENT_TOKEN"
API_TOKEN_ENV = "RMM_FLEETSIM_API_TOKEN"


def _secret(args: argparse.Namespace, file_attr: str, env: str, what: str) -> str | None:
    """A secret from its file (first line) or environment variable, never the command line."""
    path: Path | None = getattr(args, file_attr)
    if path is not None:
        try:
            return path.read_text().strip().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise FleetError(f"cannot read the {what} from {path}: {exc}") from exc
    value = os.environ.get(env, "").strip()
    return value or None


def _print_enrolled(report: EnrollReport, path: Path, as_json: bool) -> None:
    summary = {
        "enrolled": len(report.agents),
        "seconds": round(report.seconds, 3),
        "per_second": round(report.rate, 1),
        "agents_file": str(path),
    }
    if as_json:
        print(json.dumps(summary))
    else:
        print(
            f"enrolled {summary['enrolled']} agents in {summary['seconds']} s "
            f"({summary['per_second']}/s); tokens in {path} (mode 0600)"
        )


async def cmd_enroll(args: argparse.Namespace) -> int:
    token = _secret(args, "enrollment_token_file", ENROLLMENT_TOKEN_ENV, "enrollment token")
    if token is None:
        raise FleetError(f"give the enrollment token in {ENROLLMENT_TOKEN_ENV} or a file")
    report = await enroll_over_http(
        args.collector,
        token,
        args.count,
        prefix=args.prefix,
        start=args.start,
        concurrency=args.concurrency,
    )
    save_agents(args.agents, report.agents)
    _print_enrolled(report, args.agents, args.json)
    return 0


async def cmd_seed(args: argparse.Namespace) -> int:
    try:
        report = await enroll_into_database(
            args.db, args.client, args.count, prefix=args.prefix, start=args.start
        )
    except StoreError as exc:
        raise FleetError(str(exc)) from exc
    save_agents(args.agents, report.agents)
    _print_enrolled(report, args.agents, args.json)
    return 0


def _run_summary(
    plan: LoadPlan,
    report: LoadReport,
    loss: LossReport | None,
    offboards: dict[str, str],
    offboard_states: dict[str, str],
) -> dict[str, Any]:
    return {
        "collectors": list(plan.collectors),
        "rate_planned": plan.rate,
        "duration_s": round(report.seconds, 3),
        "heartbeats_planned": report.planned,
        "heartbeats_sent": report.sent,
        "heartbeats_ok": report.ok,
        "rate_achieved": round(report.rate, 1),
        "errors": dict(report.errors),
        "latency_ms": {
            "p50": round(report.percentile(0.50), 2),
            "p90": round(report.percentile(0.90), 2),
            "p99": round(report.percentile(0.99), 2),
            "max": round(report.percentile(1.0), 2),
        },
        "max_lag_behind_schedule_ms": round(report.max_lag_ms, 1),
        "commands": {
            "received": report.commands.received,
            "verified": report.commands.verified,
            "refused": report.commands.refused,
            "results_sent": report.commands.results_sent,
        },
        "offboards": {
            "requested": len(offboards),
            "offboarded": sum(s == "offboarded" for s in offboard_states.values()),
        },
        "loss_check": None
        if loss is None
        else {
            "agents_checked": loss.checked,
            "lost": len(loss.lost),
            "lost_sample": loss.lost[:10],
        },
    }


def _print_run(summary: dict[str, Any]) -> None:
    latency = summary["latency_ms"]
    lines = [
        f"heartbeats: {summary['heartbeats_ok']} ok of {summary['heartbeats_sent']} sent "
        f"({summary['heartbeats_planned']} planned) in {summary['duration_s']} s",
        f"rate: {summary['rate_achieved']}/s achieved, {summary['rate_planned']}/s planned; "
        f"at most {summary['max_lag_behind_schedule_ms']} ms behind schedule",
        f"latency ms: p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  "
        f"max {latency['max']}",
        f"errors: {summary['errors'] or 'none'}",
    ]
    commands, offboards = summary["commands"], summary["offboards"]
    if commands["received"] or offboards["requested"]:
        lines.append(
            f"commands: {commands['received']} received, {commands['verified']} verified, "
            f"{commands['refused']} refused, {commands['results_sent']} results sent; "
            f"offboards: {offboards['offboarded']} of {offboards['requested']} completed"
        )
    loss = summary["loss_check"]
    if loss is not None:
        lines.append(
            f"loss check: {loss['lost']} of {loss['agents_checked']} agents' last acknowledged "
            "heartbeat missing at the collector"
        )
    print("\n".join(lines))


async def cmd_run(args: argparse.Namespace) -> int:
    agents = load_agents(args.agents)
    if args.limit:
        agents = agents[: args.limit]
    pinned: dict[str, Ed25519PublicKey] = {}
    for pin in args.command_key:
        try:
            key_id, key = parse_pin(pin)
        except ValueError as exc:
            raise FleetError(f"--command-key {pin!r}: {exc}") from exc
        pinned[key_id] = key
    api_token = _secret(args, "api_token_file", API_TOKEN_ENV, "API token")
    if (args.offboard or args.check) and api_token is None:
        raise FleetError(f"offboards and the loss check need an API token in {API_TOKEN_ENV}")
    if args.offboard and not pinned:
        raise FleetError("offboards need --command-key: agents only accept commands they verify")
    plan = LoadPlan(
        collectors=args.collector,
        rate=args.rate,
        duration_s=args.duration,
        connections=args.connections,
        new_connection=args.new_connection,
        change_share=args.change_share,
    )
    offboards: dict[str, str] = {}
    if args.offboard:
        assert api_token is not None
        offboards = await request_offboards(
            args.collector[0], api_token, agents, args.offboard, seed=plan.seed
        )
    report = await run_load(plan, agents, pinned=pinned)
    loss = None
    offboard_states: dict[str, str] = {}
    if api_token is not None:
        await asyncio.sleep(args.settle)  # one flush interval and then some
        if offboards:
            offboard_states = await command_states(
                args.collector[0], api_token, list(offboards.values())
            )
        if args.check:
            seen = await last_seen_by_machine(args.collector[0], api_token)
            loss = find_lost(report.acknowledged, seen, clock_skew_s=args.clock_skew_s)
    summary = _run_summary(plan, report, loss, offboards, offboard_states)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_run(summary)
    failed = bool(report.errors) or (loss is not None and bool(loss.lost))
    incomplete = sum(s == "offboarded" for s in offboard_states.values()) < len(offboards)
    return 1 if failed or incomplete else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmm-fleetsim",
        description="A fleet of virtual agents speaking the real wire format to real collectors.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--agents", type=Path, required=True, help="agents file (JSON lines)")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")

    def fleet_shape(p: argparse.ArgumentParser) -> None:
        p.add_argument("--count", type=int, required=True, help="how many agents to enroll")
        p.add_argument("--prefix", default="sim", help="prefix of hardware ids and hostnames")
        p.add_argument("--start", type=int, default=0, help="number of the first agent")

    p = sub.add_parser(
        "enroll",
        help="enroll agents through POST /v1/enroll, like real agents",
        description=f"Enroll agents over HTTP. The enrollment token comes from "
        f"{ENROLLMENT_TOKEN_ENV} or --enrollment-token-file.",
    )
    p.add_argument("--collector", required=True, help="collector base URL")
    p.add_argument("--enrollment-token-file", type=Path, help="file holding the token")
    p.add_argument("--concurrency", type=int, default=64, help="enrollments in flight")
    fleet_shape(p)
    common(p)
    p.set_defaults(handler=cmd_enroll)

    p = sub.add_parser(
        "seed",
        help="enroll agents in bulk straight into a collector's state (large set-ups)",
        description="Enroll new machines in bulk into the state named by --db (a SQLite file "
        "or postgresql:// URL), recorded as API enrollments would be. For setting up large "
        "fleets quickly; use `enroll` to exercise enrollment itself.",
    )
    p.add_argument("--db", required=True, help="the collector's state (as rmm-collector --db)")
    p.add_argument("--client", default="Fleet Simulation", help="client name (created if new)")
    fleet_shape(p)
    common(p)
    p.set_defaults(handler=cmd_seed)

    p = sub.add_parser(
        "run",
        help="heartbeat the agents at a set rate and report what happened",
        description=f"Heartbeat at --rate for --duration seconds. The API token for offboards "
        f"(technician or admin) and the loss check (any role) comes from {API_TOKEN_ENV} or "
        "--api-token-file.",
    )
    p.add_argument(
        "--collector",
        action="append",
        required=True,
        help="collector base URL; repeat to spread heartbeats over several instances",
    )
    p.add_argument("--rate", type=float, required=True, help="heartbeats per second, in all")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--connections", type=int, default=64, help="requests in flight at most")
    p.add_argument(
        "--new-connection", action="store_true", help="open a new connection per heartbeat"
    )
    p.add_argument(
        "--change-share",
        type=float,
        default=0.0,
        help="share of heartbeats reporting a component stopped (facts changes)",
    )
    p.add_argument("--limit", type=int, default=0, help="use only the first N agents")
    p.add_argument(
        "--command-key",
        action="append",
        default=[],
        help="'<key_id>:<base64>' from `rmm-collector keys show`: agents pin it, ask for "
        "commands signed with it and verify them",
    )
    p.add_argument("--offboard", type=int, default=0, help="request this many offboards first")
    p.add_argument("--api-token-file", type=Path, help="file holding the API token")
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the run, check every agent's last acknowledged heartbeat is at the collector",
    )
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before checking")
    p.add_argument(
        "--clock-skew-s", type=float, default=0.0, help="allowed clock difference to collectors"
    )
    common(p)
    p.set_defaults(handler=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("count", "rate", "duration", "connections", "concurrency"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            print(f"rmm-fleetsim: --{name} must be positive", file=sys.stderr)
            return 2
    try:
        return int(asyncio.run(args.handler(args)))
    except FleetError as exc:
        print(f"rmm-fleetsim: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
