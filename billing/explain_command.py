"""`rmm-billing explain`: for one client, every machine in the inventory as of its cutoff, billed
or not, with the rule that decided and the sentence the client is told."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec

from billing.bills import BillingError
from billing.explain import Explained, explain
from billing.inventory import InventoryDocument, decode_inventory, peek_as_of, read_inventory_file
from billing.months import Month
from billing.pricebook import load_price_book
from billing.remote import CollectorSettings
from wire.times import format_instant


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    client_name: str
    month: str
    cutoff: datetime
    machines: tuple[Explained, ...]


@dataclass(frozen=True, slots=True)
class ExplainRequest:
    month: Month
    prices: Path
    client_id: str
    machine_id: str | None = None
    inventories: tuple[Path, ...] = ()
    collector: CollectorSettings | None = None


def explain_client(request: ExplainRequest) -> Explanation:
    book = load_price_book(request.prices)
    terms = book.clients.get(request.client_id)
    if terms is None:
        raise BillingError(f"client {request.client_id!r} is not in the price book")
    cutoff = terms.cutoff(request.month)
    document = _inventory_at(cutoff, request, f"client {terms.label}")
    rows = [
        explain(machine, cutoff)
        for machine in document.machines()
        if machine.client_id == request.client_id
        and (request.machine_id is None or machine.machine_id == request.machine_id)
    ]
    if request.machine_id is not None and not rows:
        raise BillingError(
            f"machine {request.machine_id!r} of client {terms.label} is not in {document.source}"
        )
    rows.sort(key=lambda row: (row.hostname.casefold(), row.machine_id))
    return Explanation(
        client_id=terms.client_id,
        client_name=terms.name,
        month=str(request.month),
        cutoff=cutoff,
        machines=tuple(rows),
    )


def _inventory_at(cutoff: datetime, request: ExplainRequest, who: str) -> InventoryDocument:
    if request.collector is not None:
        return asyncio.run(_fetch(request.collector, cutoff))
    return _from_files(cutoff, request.inventories, who)


def _from_files(cutoff: datetime, paths: Sequence[Path], who: str) -> InventoryDocument:
    for path in paths:
        buffer = read_inventory_file(path)
        if peek_as_of(buffer, str(path)) == cutoff:
            return decode_inventory(buffer, str(path))
    raise BillingError(
        f"{who}: none of the inventories given is as of its cutoff {format_instant(cutoff)}"
    )


async def _fetch(settings: CollectorSettings, cutoff: datetime) -> InventoryDocument:
    from billing.collector_client import InventoryClient, new_session

    async with new_session(settings) as session:
        client = InventoryClient(session, settings)
        return decode_inventory(await client.inventory(cutoff), client.describe(cutoff))


def explanation_json(explanation: Explanation) -> bytes:
    return msgspec.json.format(msgspec.json.encode(explanation), indent=2) + b"\n"


def explanation_text(explanation: Explanation) -> str:
    billed = sum(1 for row in explanation.machines if row.billed)
    text = [
        f"{explanation.client_name} ({explanation.client_id}), {explanation.month}: cutoff "
        f"{format_instant(explanation.cutoff)}; {billed:,} of "
        f"{len(explanation.machines):,} machines billed."
    ]
    for row in explanation.machines:
        mark = "billed    " if row.billed else "not billed"
        text.append(f"  {mark}  {row.hostname} ({row.machine_id}, {row.kind}): {row.detail}")
    return "\n".join(text)
