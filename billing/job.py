"""The monthly job: gather inventories, bill, then issue and write, in that order.

Every check happens before anything is written. Outputs go to temporary files that are renamed
only after the ledger transaction has committed, so a refused run leaves no trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from billing.documents import (
    Invoice,
    build_reports,
    content_digest,
    decode_invoice,
    draft_invoice,
    encode_invoice,
    encode_reports,
)
from billing.engine import BillingError, MonthBill, MonthRun, Role, preview_month
from billing.inventory import (
    InventoryDocument,
    InventoryError,
    decode_inventory,
    peek_as_of,
    read_inventory_file,
)
from billing.ledger import Ledger, NewInvoice
from billing.months import Month
from billing.pricebook import PriceBook, load_price_book
from billing.remote import CollectorRefused, CollectorSettings
from billing.render import html_file_name, invoice_html, invoices_csv
from billing.staging import Staging
from wire.times import format_instant

Sleep = Callable[[float], Awaitable[None]]

# The collector refuses an `as_of` in its future: if our clock runs ahead of its clock, a preview
# asks again this much earlier.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class RunRequest:
    month: Month
    prices: Path
    out: Path
    now: datetime
    inventories: tuple[Path, ...] = ()
    collector: CollectorSettings | None = None
    ledger: Path | None = None
    supersede_all: bool = False
    supersede: frozenset[str] = frozenset()

    @property
    def ledger_path(self) -> Path:
        return self.ledger if self.ledger is not None else self.out / "ledger.sqlite3"


@dataclass(slots=True)
class RunOutcome:
    month_bill: MonthBill
    invoices: list[Invoice] = field(default_factory=list)  # as written, without machine lists
    issued: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (old, new)
    differing: list[str] = field(default_factory=list)  # issued numbers the data no longer matches
    written: list[str] = field(default_factory=list)


def run_month(request: RunRequest, *, sleep: Sleep = asyncio.sleep) -> RunOutcome:
    book = load_price_book(request.prices)
    _refuse_unbillable(book, request)
    run = MonthRun(book, request.month)
    if request.collector is not None:
        asyncio.run(_gather_from_collector(run, request.collector, sleep))
    else:
        _gather_from_files(run, request.inventories)
    month_bill = run.finish()
    return _issue_and_write(month_bill, book, request)


def _refuse_unbillable(book: PriceBook, request: RunRequest) -> None:
    if not book.clients:
        raise BillingError(f"price book {request.prices}: it lists no clients")
    ahead = sorted(
        (terms.cutoff(request.month), cid)
        for cid, terms in book.clients.items()
        if terms.cutoff(request.month) > request.now
    )
    if ahead:
        cutoff, cid = ahead[0]
        others = f"; {len(ahead) - 1} more client(s) likewise" if len(ahead) > 1 else ""
        raise BillingError(
            f"{request.month} cannot be billed yet: its cutoff for client {cid!r} is "
            f"{format_instant(cutoff)}, still ahead of now ({format_instant(request.now)}){others}"
        )
    unknown = sorted(request.supersede - book.clients.keys())
    if unknown:
        raise BillingError(f"--supersede-client: not in the price book: {', '.join(unknown)}")
    if request.out.exists() and not request.out.is_dir():
        raise BillingError(f"--out {request.out}: exists and is not a directory")


def _gather_from_files(run: MonthRun, paths: Sequence[Path]) -> None:
    """Read each file's `as_of` first, then feed previous-cutoff files before current ones.

    Only one file's buffer is held at a time; the last one read is kept for processing when it
    comes first anyway, so a single large file is read once.
    """
    if not paths:
        raise BillingError("no inventory was given: pass --inventory FILE or --collector URL")
    roles: list[tuple[Role, Path]] = []
    kept: InventoryDocument | None = None
    for position, path in enumerate(paths):
        buffer = read_inventory_file(path)
        if position == len(paths) - 1:
            kept = decode_inventory(buffer, str(path))
            roles.append((run.expect(kept.as_of, str(path)), path))
        else:
            roles.append((run.expect(peek_as_of(buffer, str(path)), str(path)), path))
        del buffer
    last_role, last_path = roles[-1]
    order = sorted(roles[:-1], key=lambda item: item[0] is Role.CURRENT)
    if last_role is Role.PREVIOUS or all(role is Role.CURRENT for role, _ in order):
        order.insert(0, roles[-1])
    else:
        order.append(roles[-1])
        kept = None
    for _, path in order:
        if kept is not None and path == last_path:
            document, kept = kept, None
        else:
            document = decode_inventory(read_inventory_file(path), str(path))
        run.take(document.as_of, document.machines(), document.source)
        del document


async def _gather_from_collector(run: MonthRun, settings: CollectorSettings, sleep: Sleep) -> None:
    from billing.collector_client import InventoryClient, new_session

    previous = sorted(set(run.previous_cutoffs.values()))
    current = sorted(set(run.cutoffs.values()))
    async with new_session(settings) as session:
        client = InventoryClient(session, settings, sleep=sleep)
        for as_of in [*previous, *current]:
            source = client.describe(as_of)
            document = decode_inventory(await client.inventory(as_of), source)
            if document.as_of != as_of:
                raise InventoryError(
                    f"{source}: the collector answered as of {format_instant(document.as_of)}"
                )
            run.take(as_of, document.machines(), source)
            del document


def _issue_and_write(month_bill: MonthBill, book: PriceBook, request: RunRequest) -> RunOutcome:
    outcome = RunOutcome(month_bill)
    with Ledger.open(request.ledger_path) as ledger:
        request.out.mkdir(parents=True, exist_ok=True)
        staging = Staging(request.out)
        try:
            with ledger.transaction():
                _issue(ledger, staging, month_bill, book, request, outcome)
            staging.commit()
        finally:
            staging.abort()
    return outcome


def _issue(
    ledger: Ledger,
    staging: Staging,
    month_bill: MonthBill,
    book: PriceBook,
    request: RunRequest,
    outcome: RunOutcome,
) -> None:
    month = str(month_bill.month)
    latest = ledger.latest(month)
    with staging.open("invoices.json") as handle:
        handle.write(b'{"month":' + msgspec.json.encode(month) + b',"invoices":[')
        for position, bill in enumerate(month_bill.bills):
            client_id = bill.client.client_id
            prior = latest.get(client_id)
            digest = content_digest(bill)
            replace = request.supersede_all or client_id in request.supersede
            if prior is not None and not replace:
                document = ledger.document(prior.number)
                invoice = decode_invoice(document)
                outcome.unchanged.append(invoice.number)
                if prior.digest != digest:
                    outcome.differing.append(invoice.number)
            else:
                invoice = draft_invoice(
                    bill,
                    version=1 if prior is None else prior.version + 1,
                    issued_at=request.now,
                    supersedes=None if prior is None else prior.number,
                )
                document = encode_invoice(invoice)
                ledger.record(
                    NewInvoice(
                        number=invoice.number,
                        client_id=client_id,
                        month=month,
                        version=invoice.version,
                        currency=invoice.currency,
                        total=invoice.total,
                        issued_at=request.now,
                        digest=digest,
                        document=document,
                    ),
                    supersedes=invoice.supersedes,
                )
                if prior is None:
                    outcome.issued.append(invoice.number)
                else:
                    outcome.superseded.append((prior.number, invoice.number))
            handle.write(b"," + document if position else document)
            html = invoice_html(invoice, book.clients[client_id].zone)
            staging.write(html_file_name(invoice.number), html.encode())
            outcome.invoices.append(msgspec.structs.replace(invoice, machines=()))
        handle.write(b"]}\n")
    staging.write("invoices.csv", invoices_csv(outcome.invoices).encode())
    staging.write("reports.json", encode_reports(build_reports(month_bill)))
    outcome.written = sorted(staging.names)


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    prices: Path
    now: datetime
    month: Month | None = None
    inventory: Path | None = None
    collector: CollectorSettings | None = None

    @property
    def preview_month(self) -> Month:
        """By default the month after the current one (in UTC)."""
        return self.month or Month.containing(self.now, ZoneInfo("UTC")).next()


def preview(request: PreviewRequest, *, sleep: Sleep = asyncio.sleep) -> MonthBill:
    book = load_price_book(request.prices)
    if not book.clients:
        raise BillingError(f"price book {request.prices}: it lists no clients")
    if request.collector is not None:
        document = asyncio.run(_fetch_now(request.collector, request.now, sleep))
    elif request.inventory is not None:
        path = request.inventory
        document = decode_inventory(read_inventory_file(path), str(path))
    else:
        raise BillingError("no inventory was given: pass --collector URL or --inventory FILE")
    return preview_month(
        book, request.preview_month, document.as_of, document.machines(), document.source
    )


async def _fetch_now(settings: CollectorSettings, now: datetime, sleep: Sleep) -> InventoryDocument:
    from billing.collector_client import InventoryClient, new_session

    async with new_session(settings) as session:
        client = InventoryClient(session, settings, sleep=sleep)
        try:
            return decode_inventory(await client.inventory(now), client.describe(now))
        except CollectorRefused as exc:
            if exc.code != "as_of_in_future":
                raise
        earlier = now - CLOCK_SKEW_ALLOWANCE
        return decode_inventory(await client.inventory(earlier), client.describe(earlier))
