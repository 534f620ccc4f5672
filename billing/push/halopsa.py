"""HaloPSA: per client, a recurring invoice; per kind, the line of its item.

`POST /auth/token` (form: `grant_type=client_credentials`, `client_id`, `client_secret`,
`scope=all`) gives an `access_token`. `GET /api/RecurringInvoice/{id}?includedetails=true` answers
the invoice with its `lines` (`id`, `item_id`, `qty_order`, `unit_price`); `POST
/api/RecurringInvoice` with `[{"id": id, "lines": [...]}]` saves it, each line keeping its `id`
and carrying the new `qty_order` (a new line has no `id`). `--url` is the Halo instance root,
e.g. `https://acme.halopsa.com`.
"""

from __future__ import annotations

from typing import Any

from billing.push.http import PushError, exchange, retrying
from billing.push.model import Change, ClientPush, Context, encode_exact, quantity_text

CLIENT_ID_ENV = "RMM_BILLING_HALOPSA_CLIENT_ID"
CLIENT_SECRET_ENV = "RMM_BILLING_HALOPSA_CLIENT_SECRET"
CREDENTIALS = (CLIENT_ID_ENV, CLIENT_SECRET_ENV)


class HaloPSA:
    name = "halopsa"
    required: tuple[str, ...] = ("recurring_invoice_id", "pc_item_id", "server_item_id")

    def __init__(self) -> None:
        self._token: str | None = None

    async def _bearer(self, context: Context) -> dict[str, str]:
        if self._token is None:
            form = {
                "grant_type": "client_credentials",
                "client_id": context.credentials[CLIENT_ID_ENV],
                "client_secret": context.credentials[CLIENT_SECRET_ENV],
                "scope": "all",
            }

            async def token() -> Any:
                url = f"{context.base_url.rstrip('/')}/auth/token"
                return (await exchange(context.session, "POST", url, form=form)).json()

            answer = await retrying(token, attempts=context.attempts, sleep=context.sleep)
            self._token = str(answer["access_token"])
        return {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}

    async def push(self, context: Context, item: ClientPush, *, dry_run: bool) -> list[Change]:
        base = context.base_url.rstrip("/")
        headers = await self._bearer(context)
        invoice_id = item.mapping["recurring_invoice_id"]

        async def read() -> Any:
            url = f"{base}/api/RecurringInvoice/{invoice_id}?includedetails=true"
            return (await exchange(context.session, "GET", url, headers=headers)).json()

        recurring = await retrying(read, attempts=context.attempts, sleep=context.sleep)
        if not isinstance(recurring, dict):
            raise PushError(f"recurring invoice {invoice_id}: not an invoice object")
        lines: list[dict[str, Any]] = [dict(line) for line in recurring.get("lines") or []]
        changes = []
        for kind in ("pc", "server"):
            item_id = item.mapping[f"{kind}_item_id"]
            wanted = item.quantity(kind)
            line = next((x for x in lines if x.get("item_id") == item_id), None)
            if line is None and wanted == 0:
                continue
            before = None if line is None else quantity_text(line.get("qty_order"))
            where = f"recurring invoice {invoice_id} item {item_id}"
            if line is not None and line.get("id") is not None:
                where += f" (line {line['id']})"
            change = Change(object=where, before=before, after=str(wanted))
            changes.append(change)
            if line is None:
                lines.append(
                    {
                        "item_id": item_id,
                        "qty_order": wanted,
                        "unit_price": item.exact_unit_price(kind),
                    }
                )
            else:
                line["qty_order"] = wanted
        if dry_run or not any(change.changed for change in changes):
            return changes
        body = encode_exact([{"id": invoice_id, "lines": lines}])

        async def save() -> object:
            url = f"{base}/api/RecurringInvoice"
            return await exchange(context.session, "POST", url, headers=headers, body=body)

        await retrying(save, attempts=context.attempts, sleep=context.sleep)
        return changes
