"""ConnectWise PSA: per client, one agreement; per kind, the agreement addition of its product.

`GET /finance/agreements/{id}/additions` lists the additions (`id`, `product: {id}`, `quantity`,
`unitPrice`, `effectiveDate`, `cancelledDate`, `billCustomer`); an existing one is set with
`PATCH /finance/agreements/{id}/additions/{additionId}` and a JSON Patch
`[{"op": "replace", "path": "quantity", "value": N}]`; a missing one is created with `POST
/finance/agreements/{id}/additions` (`product`, `quantity`, `unitPrice`, `effectiveDate`,
`billCustomer: "Billable"`). Authentication is Basic `company+publicKey:privateKey` plus the
`clientId` header. `--url` is the API root, e.g. `https://na.myconnectwise.net/v4_6_release/apis/3.0`.
"""

from __future__ import annotations

import base64
from typing import Any

from billing.push.http import exchange, retrying
from billing.push.model import Change, ClientPush, Context, encode_exact, quantity_text

COMPANY_ENV = "RMM_BILLING_CONNECTWISE_COMPANY"
PUBLIC_KEY_ENV = "RMM_BILLING_CONNECTWISE_PUBLIC_KEY"
PRIVATE_KEY_ENV = "RMM_BILLING_CONNECTWISE_PRIVATE_KEY"
CLIENT_ID_ENV = "RMM_BILLING_CONNECTWISE_CLIENT_ID"
CREDENTIALS = (COMPANY_ENV, PUBLIC_KEY_ENV, PRIVATE_KEY_ENV, CLIENT_ID_ENV)


def _headers(credentials: dict[str, str]) -> dict[str, str]:
    user = f"{credentials[COMPANY_ENV]}+{credentials[PUBLIC_KEY_ENV]}"
    token = base64.b64encode(f"{user}:{credentials[PRIVATE_KEY_ENV]}".encode()).decode()
    return {
        "Authorization": f"Basic {token}",
        "clientId": credentials[CLIENT_ID_ENV],
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


class ConnectWise:
    name = "connectwise"
    required: tuple[str, ...] = ("agreement_id", "pc_product_id", "server_product_id")

    async def push(self, context: Context, item: ClientPush, *, dry_run: bool) -> list[Change]:
        agreement = item.mapping["agreement_id"]
        base = f"{context.base_url.rstrip('/')}/finance/agreements/{agreement}/additions"
        headers = _headers(context.credentials)

        async def listed() -> Any:
            answer = await exchange(
                context.session, "GET", f"{base}?pageSize=1000", headers=headers
            )
            return answer.json()

        additions = await retrying(listed, attempts=context.attempts, sleep=context.sleep)
        changes = []
        for kind in ("pc", "server"):
            product = item.mapping[f"{kind}_product_id"]
            wanted = item.quantity(kind)
            current = next(
                (
                    a
                    for a in additions
                    if (a.get("product") or {}).get("id") == product and not a.get("cancelledDate")
                ),
                None,
            )
            before = None if current is None else quantity_text(current.get("quantity"))
            if current is None and wanted == 0:
                continue  # nothing there and nothing to bill: no addition of 0 is created
            where = f"agreement {agreement} product {product}"
            if current is not None:
                where += f" (addition {current['id']})"
            change = Change(object=where, before=before, after=str(wanted))
            changes.append(change)
            if dry_run or not change.changed:
                continue
            if current is not None:
                patch = [{"op": "replace", "path": "quantity", "value": wanted}]
                url, method = f"{base}/{current['id']}", "PATCH"
                body = encode_exact(patch)
            else:
                url, method = base, "POST"
                body = encode_exact(
                    {
                        "product": {"id": product},
                        "quantity": wanted,
                        "unitPrice": item.exact_unit_price(kind),
                        "effectiveDate": f"{item.invoice.service_period.start}T00:00:00Z",
                        "billCustomer": "Billable",
                        "invoiceDescription": f"{item.invoice.number}",
                    }
                )

            async def write(url: str = url, method: str = method, body: bytes = body) -> object:
                return await exchange(context.session, method, url, headers=headers, body=body)

            await retrying(write, attempts=context.attempts, sleep=context.sleep)
        return changes
