"""The monthly job: gather inventories, bill, then issue and write, in that order.

Every check happens before anything is written. Outputs go to temporary files that are renamed
only after the ledger transaction has committed, so a refused run leaves no trace.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from billing.bills import BillingError, MonthBill
from billing.documents import (
    CreditNote,
    HeldDraft,
    Invoice,
    NotInvoiced,
    build_reports,
    content_digest,
    credit_note_for,
    decode_credit_note,
    decode_invoice,
    draft_invoice,
    encode_credit_note,
    encode_invoice,
    encode_reports,
)
from billing.engine import MonthRun, Role, preview_month
from billing.explain import billed_rows
from billing.inventory import (
    InventoryDocument,
    InventoryError,
    decode_inventory,
    peek_as_of,
    read_inventory_file,
)
from billing.ledger import Draft, Ledger, NewInvoice
from billing.months import Month
from billing.pricebook import PriceBook, load_price_book
from billing.remote import CollectorRefused, CollectorSettings
from billing.render import (
    appendix_rows,
    credit_note_html,
    evidence_csv,
    evidence_file_name,
    html_file_name,
    invoice_html,
    invoices_csv,
)
from billing.review import ReviewBounds, swing_reason
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
    review: ReviewBounds = field(default_factory=ReviewBounds)
    progress: Progress | None = None

    @property
    def ledger_path(self) -> Path:
        return ledger_path(self.ledger)


LEDGER_ENV = "RMM_BILLING_LEDGER"
DEFAULT_LEDGER = Path("data") / "billing-ledger.sqlite3"

Progress = Callable[[str], None]


def ledger_path(given: Path | None) -> Path:
    """One ledger per installation: `--ledger`, else RMM_BILLING_LEDGER, else ./data/."""
    if given is not None:
        return given
    return Path(os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)


@dataclass(slots=True)
class RunOutcome:
    month_bill: MonthBill
    invoices: list[Invoice] = field(default_factory=list)  # as written, without machine lists
    notes: list[CreditNote] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    credit_notes: list[str] = field(default_factory=list)
    not_invoiced: list[NotInvoiced] = field(default_factory=list)
    held: list[HeldDraft] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)
    _mark: float = field(default_factory=time.monotonic)
    unchanged: list[str] = field(default_factory=list)
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (old, new)
    differing: list[str] = field(default_factory=list)  # issued numbers the data no longer matches
    written: list[str] = field(default_factory=list)

    def phase(self, name: str) -> None:
        """Close the phase `name`: its time is shown in the summary."""
        now = time.monotonic()
        self.timings.append((name, now - self._mark))
        self._mark = now

    @property
    def current(self) -> list[Invoice]:
        return [invoice for invoice in self.invoices if invoice.status == "issued"]


def run_month(request: RunRequest, *, sleep: Sleep = asyncio.sleep) -> RunOutcome:
    started = time.monotonic()
    book = load_price_book(request.prices)
    _refuse_unbillable(book, request)
    run = MonthRun(book, request.month)
    if request.collector is not None:
        asyncio.run(_gather_from_collector(run, request.collector, sleep, request.progress))
    else:
        _gather_from_files(run, request.inventories, request.progress)
    gathered = time.monotonic()
    month_bill = run.finish()
    _say(request.progress, "issuing and writing invoices")
    outcome = _issue_and_write(month_bill, book, request)
    outcome.timings[:0] = [("read and bill", gathered - started)]
    return outcome


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


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


def _gather_from_files(
    run: MonthRun, paths: Sequence[Path], progress: Progress | None = None
) -> None:
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
    for step, (_, path) in enumerate(order, start=1):
        _say(progress, f"billing from {path} ({step}/{len(order)})")
        if kept is not None and path == last_path:
            document, kept = kept, None
        else:
            document = decode_inventory(read_inventory_file(path), str(path))
        run.take(document.as_of, document.machines(), document.source, document.unmanaged)
        del document


async def _gather_from_collector(
    run: MonthRun, settings: CollectorSettings, sleep: Sleep, progress: Progress | None = None
) -> None:
    from billing.collector_client import InventoryClient, new_session

    previous = sorted(set(run.previous_cutoffs.values()))
    current = sorted(set(run.cutoffs.values()))
    async with new_session(settings) as session:
        client = InventoryClient(session, settings, sleep=sleep)
        wanted = [*previous, *current]
        for step, as_of in enumerate(wanted, start=1):
            source = client.describe(as_of)
            _say(progress, f"asking for {source} ({step}/{len(wanted)})")
            document = decode_inventory(await client.inventory(as_of), source)
            if document.as_of != as_of:
                raise InventoryError(
                    f"{source}: the collector answered as of {format_instant(document.as_of)}"
                )
            run.take(as_of, document.machines(), source, document.unmanaged)
            del document


def _issue_and_write(month_bill: MonthBill, book: PriceBook, request: RunRequest) -> RunOutcome:
    outcome = RunOutcome(month_bill)
    with Ledger.open(request.ledger_path) as ledger:
        request.out.mkdir(parents=True, exist_ok=True)
        staging = Staging(request.out)
        try:
            with ledger.transaction():
                fresh = _issue(ledger, month_bill, book, request, outcome)
                outcome.phase("issue")
                _write(ledger, staging, month_bill, fresh, outcome)
            staging.commit()
            _remove_stale(request.out, set(outcome.written))
            outcome.phase("write")
        finally:
            staging.abort()
    return outcome


def _issue(
    ledger: Ledger, month_bill: MonthBill, book: PriceBook, request: RunRequest, outcome: RunOutcome
) -> dict[str, tuple[Invoice, bytes]]:
    """Issue what is due, inside the ledger transaction; returns the invoices issued now, each
    with its encoded document."""
    month = str(month_bill.month)
    seller = book.seller
    latest = ledger.latest(month)
    previous = ledger.previous_invoices(month)
    fresh: dict[str, tuple[Invoice, bytes]] = {}
    for bill in month_bill.bills:
        terms = bill.client
        client_id = terms.client_id
        prior = latest.get(client_id)
        digest = content_digest(bill)
        replace = request.supersede_all or client_id in request.supersede
        if prior is not None and not replace:
            outcome.unchanged.append(prior.number)
            if prior.digest != digest:
                outcome.differing.append(prior.number)
            continue
        if not bill.machines:
            if prior is None:
                ledger.drop_draft(client_id, month)
                outcome.not_invoiced.append(
                    NotInvoiced(
                        client_id=client_id,
                        client_name=terms.name,
                        reason=f"nothing billable at its cutoff {format_instant(bill.cutoff)}",
                    )
                )
            else:  # an issued invoice is replaced by a correction, never by nothing
                outcome.unchanged.append(prior.number)
                outcome.differing.append(prior.number)
            continue
        if prior is None and client_id in previous:
            before = previous[client_id]
            why = swing_reason(before.machines, len(bill.machines), before.number, request.review)
            if why is not None:
                held = draft_invoice(
                    bill, seller, number="", version=1, issued_at=request.now, supersedes=None
                )
                ledger.hold(
                    Draft(
                        client_id=client_id,
                        month=month,
                        reason=why,
                        machines=len(bill.machines),
                        previous_invoice=before.number,
                        previous_machines=before.machines,
                        prefix=seller.invoice_prefix,
                        digest=digest,
                        document=encode_invoice(held),
                    ),
                    request.now,
                )
                outcome.held.append(
                    HeldDraft(
                        client_id=client_id,
                        client_name=terms.name,
                        reason=why,
                        machines=len(bill.machines),
                        previous_invoice=before.number,
                        previous_machines=before.machines,
                    )
                )
                continue
        credit_number = None
        if prior is not None:
            credit_number = seller.number(ledger.next_number(seller.invoice_prefix))
        number = seller.number(ledger.next_number(seller.invoice_prefix))
        invoice = draft_invoice(
            bill,
            seller,
            number=number,
            version=1 if prior is None else prior.version + 1,
            issued_at=request.now,
            supersedes=None if prior is None else prior.number,
        )
        document = _record(ledger, invoice, digest)
        if prior is not None and credit_number is not None:
            old = decode_invoice(ledger.document(prior.number))
            note = credit_note_for(old, number=credit_number, replaced_by=number, now=request.now)
            ledger.record_credit_note(
                credit_number, prior.number, client_id, month, request.now, encode_credit_note(note)
            )
            outcome.superseded.append((prior.number, number))
            outcome.credit_notes.append(credit_number)
        else:
            outcome.issued.append(number)
        ledger.drop_draft(client_id, month)
        fresh[number] = (invoice, document)
    return fresh


def _record(ledger: Ledger, invoice: Invoice, digest: str) -> bytes:
    document = encode_invoice(invoice)
    ledger.record(
        NewInvoice(
            number=invoice.number,
            client_id=invoice.client_id,
            month=invoice.month,
            version=invoice.version,
            currency=invoice.currency,
            total=invoice.total,
            issued_at=invoice.issued_at,
            digest=digest,
            document=document,
            machines=len(invoice.machines),
        ),
        supersedes=invoice.supersedes,
    )
    return document


def _write(
    ledger: Ledger,
    staging: Staging,
    month_bill: MonthBill,
    fresh: dict[str, tuple[Invoice, bytes]],
    outcome: RunOutcome,
) -> None:
    """Every invoice issued for the month, current or superseded, whoever is in the price book
    now; the credit notes beside them; and the evidence behind each client's bill."""
    month = str(month_bill.month)
    bills = {bill.client.client_id: bill for bill in month_bill.bills}
    evidenced: set[str] = set()
    with staging.open("invoices.json") as handle:
        handle.write(b'{"month":' + msgspec.json.encode(month) + b',"invoices":[')
        for position, issued in enumerate(ledger.month_invoices(month)):
            if issued.number in fresh:
                invoice, document = fresh[issued.number]
            else:
                document = ledger.document(issued.number)
                invoice = decode_invoice(document)
            if invoice.status != issued.status:
                invoice = msgspec.structs.replace(invoice, status=issued.status)
                document = encode_invoice(invoice)
            handle.write((b"," if position else b"") + document)
            bill = bills.get(invoice.client_id) if issued.status == "issued" else None
            rows = appendix_rows(invoice, bill)
            staging.write(html_file_name(invoice.number), invoice_html(invoice, rows).encode())
            if bill is not None:
                name = evidence_file_name(invoice.client_id)
                staging.write(name, evidence_csv(invoice.client_id, rows).encode())
                evidenced.add(invoice.client_id)
            outcome.invoices.append(msgspec.structs.replace(invoice, machines=()))
        handle.write(b'],"credit_notes":[')
        for position, (number, document) in enumerate(ledger.credit_notes(month)):
            note = decode_credit_note(document)
            handle.write((b"," if position else b"") + document)
            staging.write(html_file_name(number), credit_note_html(note).encode())
            outcome.notes.append(note)
        handle.write(b"]}\n")
    for bill in month_bill.bills:  # clients without a current invoice: why nothing was billed
        client_id = bill.client.client_id
        if client_id not in evidenced:
            rows = billed_rows(bill.machines, bill.cutoff) + list(bill.unbilled)
            staging.write(evidence_file_name(client_id), evidence_csv(client_id, rows).encode())
    staging.write("invoices.csv", invoices_csv(outcome.invoices, outcome.notes).encode())
    reports = build_reports(
        month_bill, not_invoiced=tuple(outcome.not_invoiced), held=tuple(outcome.held)
    )
    staging.write("reports.json", encode_reports(reports))
    outcome.written = sorted(staging.names)


_OURS = re.compile(r"(invoice-.*\.html|evidence-.*\.csv)")


def _remove_stale(out: Path, written: set[str]) -> None:
    """Documents an earlier run wrote that this one did not (a renamed client's evidence)."""
    for path in out.iterdir():
        if _OURS.fullmatch(path.name) and path.name not in written:
            path.unlink(missing_ok=True)


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
