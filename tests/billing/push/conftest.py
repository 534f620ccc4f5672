"""A month already billed: a real ledger with issued invoices, and the price book's PSA mapping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from billing.job import RunRequest, run_month
from billing.months import Month
from tests.billing.factories import SELLER, at, client, machine, price_book_toml, write_inventory

MARCH = Month(2026, 3)
SECRET = "whsec-test-0123456789"


@dataclass
class Billed:
    root: Path
    prices: Path
    ledger: Path
    inventory: Path

    def bill(self, *, supersede: frozenset[str] = frozenset()) -> None:
        run_month(
            RunRequest(
                month=MARCH,
                prices=self.prices,
                out=self.root / "out",
                now=at("2026-03-02T08:00:00Z"),
                inventories=(self.inventory,),
                ledger=self.ledger,
                supersede=supersede,
            )
        )


def mapped(client_id: str, n: int) -> dict[str, Any]:
    table = client(client_id, name=f"Client {client_id}")
    table["connectwise"] = {"agreement_id": 100 + n, "pc_product_id": 11, "server_product_id": 12}
    table["autotask"] = {"contract_id": 200 + n, "pc_service_id": 21, "server_service_id": 22}
    table["halopsa"] = {"recurring_invoice_id": 300 + n, "pc_item_id": 31, "server_item_id": 32}
    return table


def write_prices(path: Path, tables: list[dict[str, Any]]) -> None:
    path.write_text(price_book_toml(*tables, seller=SELLER))


def make_billed(root: Path, counts: dict[str, tuple[int, int]]) -> Billed:
    tables = [mapped(cid, n) for n, cid in enumerate(counts)]
    prices = root / "prices.toml"
    write_prices(prices, tables)
    rows = []
    for cid, (pcs, servers) in counts.items():
        rows += [machine(f"{cid}-pc-{i}", client_id=cid) for i in range(pcs)]
        rows += [machine(f"{cid}-srv-{i}", client_id=cid, kind="server") for i in range(servers)]
    inventory = write_inventory(root / "mar.json", "2026-03-01T00:00:00Z", rows)
    billed = Billed(root, prices, root / "ledger.sqlite3", inventory)
    billed.bill()
    return billed


@pytest.fixture
def billed(tmp_path: Path) -> Billed:
    return make_billed(tmp_path, {"acme": (3, 1), "bayside": (2, 0)})


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMM_BILLING_WEBHOOK_SECRET", SECRET)
    for name, value in {
        "RMM_BILLING_CONNECTWISE_COMPANY": "northwind",
        "RMM_BILLING_CONNECTWISE_PUBLIC_KEY": "pub",
        "RMM_BILLING_CONNECTWISE_PRIVATE_KEY": "priv",
        "RMM_BILLING_CONNECTWISE_CLIENT_ID": "cid-1",
        "RMM_BILLING_AUTOTASK_INTEGRATION_CODE": "INT",
        "RMM_BILLING_AUTOTASK_USERNAME": "api@northwind",
        "RMM_BILLING_AUTOTASK_SECRET": "s3cret",
        "RMM_BILLING_HALOPSA_CLIENT_ID": "halo-id",
        "RMM_BILLING_HALOPSA_CLIENT_SECRET": "halo-secret",
    }.items():
        monkeypatch.setenv(name, value)
