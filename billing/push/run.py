"""A month's push: the current invoices of M from the ledger (never recomputed), each client on its
own so one failure stops no other, at most `in_flight` at a time, every result in the ledger."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

from billing.documents import decode_invoice
from billing.ledger import Ledger, Pushed
from billing.months import Month
from billing.pricebook import PriceBook, load_price_book
from billing.push import connectwise, webhook
from billing.push.connectwise import ConnectWise
from billing.push.http import PushError, Refused, Sleep, Transient
from billing.push.model import Change, ClientPush, Context, Target
from billing.push.webhook import Webhook

CREDENTIALS: dict[str, tuple[str, ...]] = {
    "webhook": (webhook.SECRET_ENV,),
    "connectwise": connectwise.CREDENTIALS,
}


def targets() -> dict[str, Callable[[], Target]]:
    from billing.push.autotask import Autotask
    from billing.push.halopsa import HaloPSA

    return {
        "webhook": Webhook,
        "connectwise": ConnectWise,
        "autotask": Autotask,
        "halopsa": HaloPSA,
    }


def credential_names(target: str) -> tuple[str, ...]:
    from billing.push import autotask, halopsa

    return {**CREDENTIALS, "autotask": autotask.CREDENTIALS, "halopsa": halopsa.CREDENTIALS}[target]


@dataclass(frozen=True, slots=True)
class PushRequest:
    month: Month
    target: str
    url: str
    ledger: Path
    now: datetime
    prices: Path | None = None
    credentials_file: Path | None = None
    dry_run: bool = False
    in_flight: int = 8
    attempts: int = 5
    request_timeout_s: float = 30.0  # a request unanswered this long counts as a timeout
    clock: Callable[[], datetime] | None = None  # when each result is recorded; default `now`


@dataclass(slots=True)
class ClientResult:
    client_id: str
    label: str
    invoice_number: str
    changes: list[Change] = field(default_factory=list)
    error: str | None = None
    already: bool = False  # delivered by an earlier push: nothing sent


@dataclass(slots=True)
class PushOutcome:
    request: PushRequest
    results: list[ClientResult]

    @property
    def ok(self) -> bool:
        return all(result.error is None for result in self.results)


def load_credentials(
    names: tuple[str, ...], path: Path | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """From `path` (NAME=value lines, readable by its owner only) or else the environment."""
    found: dict[str, str] = {}
    if path is not None:
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except OSError as exc:
            raise PushError(f"credentials file {path}: cannot be read ({exc.strerror})") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PushError(
                f"credentials file {path}: mode {stat.S_IMODE(mode):04o} lets others read it; "
                f"chmod 600 {path}"
            )
        for line in text.splitlines():
            name, sep, value = line.strip().partition("=")
            if sep and not name.startswith("#"):
                found[name.strip()] = value.strip()
    missing = [name for name in names if not (found.get(name) or environ.get(name))]
    if missing:
        where = f"in {path} or the environment" if path is not None else "in the environment"
        raise PushError(f"credentials missing {where}: {', '.join(missing)}")
    return {name: found.get(name) or environ[name] for name in names}


def _main_object(target: str, item: ClientPush, url: str) -> str:
    mapping = item.mapping
    if target == "connectwise":
        return f"agreement {mapping.get('agreement_id')}"
    if target == "autotask":
        return f"contract {mapping.get('contract_id')}"
    if target == "halopsa":
        return f"recurring invoice {mapping.get('recurring_invoice_id')}"
    return url


def _refusal(error: Refused) -> str:
    if error.status == 401:
        return "the PSA refused the credentials (401)"
    if error.status == 403:
        return "the credentials may not change it (403)"
    if error.status == 404:
        return "not found (404)"
    return str(error)


def current_invoices(ledger: Ledger, month: Month) -> list[ClientPush]:
    latest = ledger.latest(str(month))
    return [
        ClientPush(invoice=decode_invoice(document), document=document)
        for document in (ledger.document(issued.number) for issued in latest.values())
    ]


async def push_month(
    request: PushRequest,
    *,
    sleep: Sleep = asyncio.sleep,
    progress: Callable[[ClientResult], None] | None = None,
) -> PushOutcome:
    factory = targets().get(request.target)
    if factory is None:
        raise PushError(f"--to {request.target}: expected one of {', '.join(sorted(targets()))}")
    target = factory()
    credentials = load_credentials(credential_names(request.target), request.credentials_file)
    if not request.ledger.exists():
        raise PushError(f"ledger {request.ledger}: does not exist; run `rmm-billing run` first")
    book: PriceBook | None = None
    if target.required:
        if request.prices is None:
            raise PushError(f"--to {request.target} needs --prices: the mapping is in it")
        book = load_price_book(request.prices)
    with Ledger.open(request.ledger) as ledger:
        items = sorted(current_invoices(ledger, request.month), key=lambda i: i.client_id)
        if not items:
            raise PushError(f"no invoice is issued for {request.month} in {request.ledger}")
        # Delivered to this same endpoint: another webhook still gets everything.
        delivered = {
            p.invoice_number
            for p in ledger.pushes(str(request.month), request.target)
            if p.object == request.url
        }
        results = await _push_all(
            request, target, credentials, book, items, delivered, sleep, ledger, progress
        )
    return PushOutcome(request, results)


async def _push_all(
    request: PushRequest,
    target: Target,
    credentials: dict[str, str],
    book: PriceBook | None,
    items: list[ClientPush],
    delivered: set[str],
    sleep: Sleep,
    ledger: Ledger,
    progress: Callable[[ClientResult], None] | None,
) -> list[ClientResult]:
    gate = asyncio.Semaphore(request.in_flight)
    timeout = aiohttp.ClientTimeout(total=request.request_timeout_s, sock_connect=15)
    connector = aiohttp.TCPConnector(limit=request.in_flight)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        context = Context(session, request.url, credentials, request.attempts, sleep)

        async def one(item: ClientPush) -> ClientResult:
            if book is not None:
                terms = book.clients.get(item.client_id)
                mapping = {} if terms is None else terms.psa.get(request.target, {})
                item = ClientPush(item.invoice, item.document, mapping)
            result = ClientResult(item.client_id, item.label, item.invoice.number)
            async with gate:
                await _push_one(request, target, context, item, delivered, ledger, result)
            if progress is not None:
                progress(result)
            return result

        return list(await asyncio.gather(*(one(item) for item in items)))


async def _push_one(
    request: PushRequest,
    target: Target,
    context: Context,
    item: ClientPush,
    delivered: set[str],
    ledger: Ledger,
    result: ClientResult,
) -> None:
    where = (
        f"client {item.label}: {request.target} {_main_object(request.target, item, request.url)}"
    )
    missing = [key for key in target.required if key not in item.mapping]
    if missing:
        result.error = (
            f"client {item.label}: no {request.target} mapping in the price book "
            f"(set {', '.join(missing)} under [client.{request.target}])"
        )
        return
    if request.target == "webhook" and item.invoice.number in delivered:
        result.already = True
        return
    try:
        result.changes = await target.push(context, item, dry_run=request.dry_run)
    except Refused as exc:
        result.error = f"{where}: {_refusal(exc)}"
        return
    except Transient as exc:
        result.error = f"{where}: gave up after {request.attempts} attempts: {exc}"
        return
    except (PushError, ValueError, KeyError, TypeError) as exc:
        result.error = f"{where}: unexpected answer ({exc.__class__.__name__}: {exc})"
        return
    if request.dry_run:
        return
    for change in result.changes:
        ledger.record_push(
            Pushed(
                target=request.target,
                client_id=item.client_id,
                month=item.invoice.month,
                invoice_number=item.invoice.number,
                object=change.object,
                before=change.before,
                after=change.after,
                changed=change.changed,
            ),
            request.clock() if request.clock is not None else request.now,
        )


def outcome_text(outcome: PushOutcome) -> tuple[str, str]:
    """(stdout, stderr): the table of changes, then the failures by client."""
    request = outcome.request
    verb = "would change" if request.dry_run else "changed"
    lines = []
    changed = unchanged = already = 0
    for result in outcome.results:
        if result.already:
            already += 1
            lines.append(f"  {result.client_id}  {result.invoice_number}: already delivered")
        for change in result.changes:
            if change.changed:
                changed += 1
                before = "-" if change.before is None else change.before
                lines.append(f"  {result.client_id}  {change.object}: {before} -> {change.after}")
            else:
                unchanged += 1
    failed = [result.error for result in outcome.results if result.error is not None]
    head = (
        f"Push of {request.month} to {request.target}"
        + (" (dry run: nothing sent)" if request.dry_run else "")
        + f": {len(outcome.results):,} clients; {verb} {changed:,} objects, "
        f"{unchanged:,} already right, {already:,} already delivered, {len(failed):,} failed."
    )
    if not changed and not failed and not request.dry_run:
        head += " Nothing to change."
    errors = "\n".join(f"rmm-billing: error: {error}" for error in failed)
    return "\n".join([head, *lines]), errors


def status_text(ledger_path: Path, month: Month, target: str | None) -> str:
    if not ledger_path.exists():
        raise PushError(f"ledger {ledger_path}: does not exist")
    with Ledger.open(ledger_path) as ledger:
        pushes = ledger.pushes(str(month), target)
    if not pushes:
        return f"Nothing was pushed for {month}" + (f" to {target}." if target else ".")
    lines = [f"Pushes of {month}:"]
    for p in pushes:
        before = "-" if p.before is None else p.before
        what = f"{before} -> {p.after}" if p.changed else f"{p.after} (already right)"
        lines.append(f"  {p.at}  {p.target}  {p.client_id}  {p.invoice_number}  {p.object}: {what}")
    return "\n".join(lines)
