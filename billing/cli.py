"""`rmm-billing`: the monthly billing job and the account manager's preview."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from billing.engine import BillingError
from billing.inventory import InventoryError
from billing.job import PreviewRequest, RunRequest, preview, run_month
from billing.ledger import LedgerError
from billing.months import Month, MonthError
from billing.pricebook import PriceBookError
from billing.remote import CollectorError, CollectorSettings
from billing.summary import preview_json, preview_text, run_summary
from wire.times import InstantError, parse_instant

TOKEN_ENV = "RMM_BILLING_TOKEN"

_RUN_EPILOG = """\
Each client is billed from the inventory as of its cutoff (00:00 on the 1st in its time zone) at
the price in force then; the inventory as of the previous cutoff feeds the change report. Reruns
return the invoices already issued; --supersede issues new versions and keeps the old ones.
A refused run writes nothing. Exit status: 0 done, 1 refused or failed, 2 bad usage.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args, parser)
        return _preview(args, parser)
    except (
        BillingError,
        PriceBookError,
        InventoryError,
        CollectorError,
        LedgerError,
        MonthError,
        InstantError,
    ) as exc:
        print(f"rmm-billing: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rmm-billing: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmm-billing",
        description="Bill managed machines monthly, in advance, from the collector's inventory.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="bill a month: invoices, CSV for PSA import, HTML invoices and reports",
        description="Bill a month: invoices.json, invoices.csv, one HTML invoice per client\n"
        "and reports.json in --out, recorded in the ledger.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--month", required=True, type=_month, help="the month to bill, YYYY-MM")
    run.add_argument("--prices", required=True, type=Path, metavar="FILE", help="price book (TOML)")
    run.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    _add_sources(run, repeatable=True)
    run.add_argument(
        "--ledger",
        type=Path,
        metavar="PATH",
        help="SQLite ledger of issued invoices (default: DIR/ledger.sqlite3)",
    )
    run.add_argument(
        "--supersede",
        action="store_true",
        help="issue a new version of every invoice of the month, keeping the old ones",
    )
    run.add_argument(
        "--supersede-client",
        action="append",
        default=[],
        metavar="CLIENT_ID",
        help="issue a new version of this client's invoice only (repeatable)",
    )
    _add_now(run)

    ahead = commands.add_parser(
        "preview",
        help="what next month's invoices will be if nothing changes",
        description="What the invoices of the next month will be if nothing changes: the "
        "inventory as it stands now, priced at that month's cutoff. Writes nothing.",
    )
    ahead.add_argument("--prices", required=True, type=Path, metavar="FILE", help="price book")
    _add_sources(ahead, repeatable=False)
    ahead.add_argument(
        "--month", type=_month, help="the month to preview, YYYY-MM (default: next month, UTC)"
    )
    ahead.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_now(ahead)
    return parser


def _add_sources(parser: argparse.ArgumentParser, *, repeatable: bool) -> None:
    source = parser.add_argument_group("inventory source (one of)")
    source.add_argument("--collector", metavar="URL", help="the collector's base URL")
    source.add_argument(
        "--inventory",
        type=Path,
        metavar="FILE",
        action="append" if repeatable else "store",
        help="a saved GET /v1/inventory response"
        + (" (repeatable: one per cutoff)" if repeatable else " (as of now)"),
    )
    source.add_argument(
        "--token", metavar="T", help=f"API token with the billing role (or set {TOKEN_ENV})"
    )
    source.add_argument("--token-file", type=Path, metavar="FILE", help="read the token from FILE")
    source.add_argument(
        "--ca-file", type=Path, metavar="FILE", help="CA bundle to verify the collector with"
    )
    source.add_argument(
        "--collector-attempts",
        type=_attempts,
        default=4,
        metavar="N",
        help="tries per request when the collector is unreachable or answers 5xx (default 4)",
    )


def _add_now(parser: argparse.ArgumentParser) -> None:
    # The clock is injectable so that cutoff checks can be exercised on any date.
    parser.add_argument("--now", type=_instant, help=argparse.SUPPRESS)


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except MonthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _attempts(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1 to 20")
    return int(text)


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except InstantError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _collector(args: argparse.Namespace, parser: argparse.ArgumentParser) -> CollectorSettings:
    token = args.token
    if token is None and args.token_file is not None:
        token = args.token_file.read_text().strip()
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"--collector needs a token: --token, --token-file or {TOKEN_ENV}")
    settings = CollectorSettings(
        url=args.collector,
        token=token,
        ca_file=args.ca_file,
        attempts=args.collector_attempts,
    )
    if not args.collector.startswith(("http://", "https://")):
        parser.error(f"--collector {args.collector}: expected an http:// or https:// URL")
    if not settings.is_loopback_or_tls:
        print(
            "rmm-billing: warning: the token is sent without TLS; use https:// in production",
            file=sys.stderr,
        )
    return settings


def _now(args: argparse.Namespace) -> datetime:
    return args.now if args.now is not None else datetime.now(UTC)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if (args.collector is None) == (not args.inventory):
        parser.error("give either --collector URL or --inventory FILE (repeatable), not both")
    request = RunRequest(
        month=args.month,
        prices=args.prices,
        out=args.out,
        now=_now(args),
        inventories=tuple(args.inventory or ()),
        collector=_collector(args, parser) if args.collector else None,
        ledger=args.ledger,
        supersede_all=args.supersede,
        supersede=frozenset(args.supersede_client),
    )
    outcome = run_month(request)
    print(run_summary(outcome, request))
    return 0


def _preview(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if (args.collector is None) == (args.inventory is None):
        parser.error("give either --collector URL or --inventory FILE, not both")
    now = _now(args)
    request = PreviewRequest(
        prices=args.prices,
        now=now,
        month=args.month,
        inventory=args.inventory,
        collector=_collector(args, parser) if args.collector else None,
    )
    month_bill = preview(request)
    if args.json:
        sys.stdout.buffer.write(preview_json(month_bill) + b"\n")
    else:
        print(preview_text(month_bill))
    return 0


if __name__ == "__main__":
    sys.exit(main())
