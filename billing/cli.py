"""`rmm-billing`: the monthly billing job, review and approval, explanations, the preview."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from billing.approval import approve, would_hold
from billing.bills import BillingError
from billing.explain_command import (
    ExplainRequest,
    explain_client,
    explanation_json,
    explanation_text,
)
from billing.inventory import InventoryError
from billing.job import (
    DEFAULT_LEDGER,
    LEDGER_ENV,
    PreviewRequest,
    Progress,
    RunRequest,
    ledger_path,
    preview,
    run_month,
)
from billing.ledger import LedgerError
from billing.months import Month, MonthError
from billing.pricebook import PriceBookError
from billing.push.errors import PushError
from billing.remote import CollectorError, CollectorSettings
from billing.review import ReviewBounds
from billing.summary import preview_json, preview_text, run_summary
from wire.text import printable_lines
from wire.times import InstantError, parse_instant

TOKEN_ENV = "RMM_BILLING_TOKEN"

_RUN_EPILOG = """\
Each client is billed from the inventory as of its cutoff (00:00 on the 1st in its time zone) at
the price in force then; the inventory as of the previous cutoff feeds the change report. Reruns
return the invoices already issued; --supersede issues new versions, keeps the old ones marked
superseded and issues a credit note for each. A client whose machine count swings past the review
bound against its previous invoice is held as a draft until `rmm-billing approve`.
A refused run writes nothing. Exit status: 0 done, 1 refused or failed, 2 bad usage.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args, parser)
        if args.command == "approve":
            return _approve(args)
        if args.command == "explain":
            return _explain(args, parser)
        if args.command == "push":
            return _push(args, parser)
        return _preview(args, parser)
    except (
        BillingError,
        PriceBookError,
        InventoryError,
        CollectorError,
        LedgerError,
        MonthError,
        InstantError,
        PushError,
    ) as exc:
        print(f"rmm-billing: error: {printable_lines(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rmm-billing: error: {printable_lines(str(exc))}", file=sys.stderr)
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
    _add_ledger(run)
    _add_review(run)
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
    _add_ledger(ahead)
    _add_review(ahead)
    _add_now(ahead)

    approve = commands.add_parser(
        "approve",
        help="issue an invoice held for review",
        description="Issue the draft invoice held for review for one client and month; it takes "
        "the next invoice number. Rerun `rmm-billing run` to write it to --out.",
    )
    approve.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    approve.add_argument("--client", required=True, metavar="CLIENT_ID", help="the client's id")
    _add_ledger(approve)
    _add_now(approve)

    why = commands.add_parser(
        "explain",
        help="why each machine of a client was billed or not",
        description="For each machine of a client in the inventory as of its cutoff: billed or "
        "not, the rule that decided (billed, not_enrolled_yet, offboarded, moved, expired) and the "
        "sentence the client is told.",
    )
    why.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    why.add_argument("--prices", required=True, type=Path, metavar="FILE", help="price book")
    why.add_argument("--client", required=True, metavar="CLIENT_ID", help="the client's id")
    why.add_argument("--machine", metavar="MACHINE_ID", help="only this machine")
    why.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_sources(why, repeatable=True)

    send = commands.add_parser(
        "push",
        help="send a month's issued invoices to a PSA or a signed webhook",
        description="Set each client's quantities in the PSA (or post its invoice to a signed "
        "webhook) from the issued invoices of --month in the ledger, never recomputed. The PSA's "
        "current quantity is read first and set to the month's count, so a second push changes "
        "nothing. Credentials come from the environment or --credentials FILE (mode 0600).",
        epilog="Exit status: 0 every client pushed, 1 some client failed (each is named), "
        "2 bad usage.",
    )
    send.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    send.add_argument(
        "--to", choices=("connectwise", "autotask", "halopsa", "webhook"), help="the target"
    )
    send.add_argument("--url", help="the webhook URL, or the PSA's API root")
    send.add_argument(
        "--prices", type=Path, metavar="FILE", help="price book with the PSA mapping per client"
    )
    send.add_argument(
        "--credentials", type=Path, metavar="FILE", help="NAME=value lines, mode 0600"
    )
    send.add_argument("--dry-run", action="store_true", help="show what would change; send nothing")
    send.add_argument("--status", action="store_true", help="show what was pushed for the month")
    send.add_argument(
        "--in-flight", type=_attempts, default=8, metavar="N", help="clients at once (default 8)"
    )
    _add_ledger(send)
    _add_now(send)
    return parser


def _add_ledger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        type=Path,
        metavar="PATH",
        help=f"the installation's SQLite ledger of invoices (default: ${LEDGER_ENV} or "
        f"./{DEFAULT_LEDGER})",
    )


def _add_review(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--review-percent",
        type=_percent,
        default=ReviewBounds().percent,
        metavar="P",
        help="hold an invoice whose machine count changed by more than P%% against the "
        "client's previous invoice (default 25) ...",
    )
    parser.add_argument(
        "--review-machines",
        type=_count,
        default=ReviewBounds().machines,
        metavar="N",
        help="... and by at least N machines (default 5)",
    )


def _percent(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a percentage of 0 or more")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of 0 or more")
    return int(text)


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


def _one_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.collector is not None and args.inventory:
        parser.error("give either --collector URL or --inventory FILE, not both")
    if args.collector is None and not args.inventory:
        parser.error("no inventory source: give --collector URL or --inventory FILE")


def _progress() -> Progress | None:
    """Progress lines on a terminal only: logs and scripts get the summary alone."""
    if not sys.stderr.isatty():
        return None
    return lambda text: print(f"rmm-billing: {text} ...", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _one_source(args, parser)
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
        review=ReviewBounds(args.review_percent, args.review_machines),
        progress=_progress(),
    )
    outcome = run_month(request)
    print(printable_lines(run_summary(outcome, request)))
    return 0


def _approve(args: argparse.Namespace) -> int:
    invoice = approve(ledger_path(args.ledger), args.month, args.client, _now(args))
    print(
        f"Issued {invoice.number} to {invoice.client_name!r} ({invoice.client_id}) for "
        f"{invoice.month}: {invoice.total} {invoice.currency}. Run `rmm-billing run --month "
        f"{invoice.month} ...` again to write it to the output folder."
    )
    return 0


def _explain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _one_source(args, parser)
    request = ExplainRequest(
        month=args.month,
        prices=args.prices,
        client_id=args.client,
        machine_id=args.machine,
        inventories=tuple(args.inventory or ()),
        collector=_collector(args, parser) if args.collector else None,
    )
    explanation = explain_client(request)
    if args.json:
        sys.stdout.buffer.write(explanation_json(explanation))
    else:
        print(printable_lines(explanation_text(explanation)))
    return 0


def _push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from billing.push.run import PushRequest, outcome_text, push_month, status_text

    ledger = ledger_path(args.ledger)
    if args.status:
        print(printable_lines(status_text(ledger, args.month, args.to)))
        return 0
    if args.to is None or not args.url:
        parser.error("push needs --to TARGET and --url URL (or --status)")
    request = PushRequest(
        month=args.month,
        target=args.to,
        url=args.url,
        ledger=ledger,
        now=_now(args),
        prices=args.prices,
        credentials_file=args.credentials,
        dry_run=args.dry_run,
        in_flight=args.in_flight,
        clock=None if args.now is not None else (lambda: datetime.now(UTC)),
    )
    outcome = asyncio.run(push_month(request))
    shown, errors = outcome_text(outcome)
    print(printable_lines(shown))
    if errors:
        print(printable_lines(errors), file=sys.stderr)
    return 0 if outcome.ok else 1


def _preview(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.collector is not None and args.inventory is not None:
        parser.error("give either --collector URL or --inventory FILE, not both")
    if args.collector is None and args.inventory is None:
        parser.error("no inventory source: give --collector URL or --inventory FILE")
    now = _now(args)
    request = PreviewRequest(
        prices=args.prices,
        now=now,
        month=args.month,
        inventory=args.inventory,
        collector=_collector(args, parser) if args.collector else None,
    )
    month_bill = preview(request)
    bounds = ReviewBounds(args.review_percent, args.review_machines)
    held = would_hold(month_bill, ledger_path(args.ledger), bounds)
    if args.json:
        sys.stdout.buffer.write(preview_json(month_bill, held) + b"\n")
    else:
        print(printable_lines(preview_text(month_bill, held)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
