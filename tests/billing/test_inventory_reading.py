"""Saved `GET /v1/inventory` responses are read strictly, except for keys added later."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing.inventory import InventoryError, decode_inventory, peek_as_of, read_inventory_file
from tests.billing.factories import at, inventory_bytes, machine

ROW = (
    b'{"machine_id":"m-1","client_id":"acme","hostname":"DESK","kind":"pc",'
    b'"first_seen":"2025-06-02T09:00:00Z","last_seen":"2026-02-27T18:00:00+01:00",'
    b'"offboarded_at":null,"components":[{"name":"rmm","status":"running","version":null,'
    b'"required":true,"uptime_s":5}],"site":"Main street"}'
)


def test_rows_decode_with_unknown_keys_ignored() -> None:
    document = decode_inventory(b'{"as_of":"2026-03-01T00:00:00Z","machines":[' + ROW + b"]}", "f")
    (row,) = document.machines()
    assert document.as_of == at("2026-03-01T00:00:00Z")
    assert row.last_seen == at("2026-02-27T17:00:00Z")
    assert row.components[0].name == "rmm"


def test_what_is_written_reads_back_the_same() -> None:
    rows = [machine("a"), machine("b", kind="server", offboarded_at="2026-02-01T00:00:00Z")]
    document = decode_inventory(inventory_bytes("2026-03-01T00:00:00Z", rows), "f")
    assert list(document.machines()) == rows


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not an inventory response"),
        (b'{"machines": []}', "missing required field `as_of`"),
        (b'{"as_of": "2026-03-01T00:00:00", "machines": []}', "timezone"),
        (b'{"as_of": "2026-03-01T00:00:00Z", "machines": [', "truncated"),
    ],
)
def test_a_malformed_response_is_an_inventory_error(body: bytes, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        decode_inventory(body, "saved.json")
    with pytest.raises(InventoryError, match=message):
        peek_as_of(body, "saved.json")


def test_a_malformed_row_names_the_row_and_the_field() -> None:
    bad = ROW.replace(b'"kind":"pc"', b'"kind":"laptop"')
    document = decode_inventory(
        b'{"as_of":"2026-03-01T00:00:00Z","machines":[' + ROW + b"," + bad + b"]}", "saved.json"
    )
    with pytest.raises(InventoryError, match=r"saved.json: .*\$\.machines\[1\]\.kind"):
        list(document.machines())


def test_an_unreadable_file_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot be read"):
        read_inventory_file(tmp_path / "absent.json")
