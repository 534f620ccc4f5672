"""Autotask PSA: per client, a recurring service contract; per kind, its contract service.

Units are never set directly: `ContractServiceUnits` (read-only) says how many units of a contract
service are in force on a date, and a `ContractServiceAdjustments` record (`contractID`,
`contractServiceID`, `serviceID`, `effectiveDate`, `unitChange`) changes them from its effective
date. The push reads the units in force on the first day of the month, then adjusts by the
difference, so a second push (or a rerun after an interruption) finds nothing left to adjust.
Queries are `GET /{Entity}/query?search=<JSON filter>` answering `{"items": [...]}`; the headers
are `ApiIntegrationCode`, `UserName` and `Secret`. `--url` is the zone's REST root, e.g.
`https://webservices5.autotask.net/ATServicesRest/V1.0`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from billing.push.http import PushError, exchange, retrying
from billing.push.model import Change, ClientPush, Context, count_of

INTEGRATION_CODE_ENV = "RMM_BILLING_AUTOTASK_INTEGRATION_CODE"
USERNAME_ENV = "RMM_BILLING_AUTOTASK_USERNAME"
SECRET_ENV = "RMM_BILLING_AUTOTASK_SECRET"
CREDENTIALS = (INTEGRATION_CODE_ENV, USERNAME_ENV, SECRET_ENV)


def _headers(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "ApiIntegrationCode": credentials[INTEGRATION_CODE_ENV],
        "UserName": credentials[USERNAME_ENV],
        "Secret": credentials[SECRET_ENV],
        "Content-Type": "application/json",
    }


def _search(*conditions: tuple[str, str, object]) -> str:
    document = {"filter": [{"op": op, "field": f, "value": v} for f, op, v in conditions]}
    return quote(msgspec.json.encode(document).decode(), safe="")


class Autotask:
    name = "autotask"
    required: tuple[str, ...] = ("contract_id", "pc_service_id", "server_service_id")

    async def push(self, context: Context, item: ClientPush, *, dry_run: bool) -> list[Change]:
        base = context.base_url.rstrip("/")
        headers = _headers(context.credentials)
        contract = item.mapping["contract_id"]
        day = f"{item.invoice.service_period.start}T00:00:00Z"

        async def query(entity: str, search: str) -> list[Any]:
            async def get() -> Any:
                url = f"{base}/{entity}/query?search={search}"
                return (await exchange(context.session, "GET", url, headers=headers)).json()

            answer = await retrying(get, attempts=context.attempts, sleep=context.sleep)
            return list(answer.get("items") or [])

        changes = []
        for kind in ("pc", "server"):
            service = item.mapping[f"{kind}_service_id"]
            where = f"contract {contract} service {service}"
            found = await query(
                "ContractServices",
                _search(("contractID", "eq", contract), ("serviceID", "eq", service)),
            )
            if not found:
                raise PushError(f"{where}: not on the contract; add the service in Autotask")
            contract_service = found[0]["id"]
            units = await query(
                "ContractServiceUnits",
                _search(
                    ("contractServiceID", "eq", contract_service),
                    ("startDate", "lte", day),
                    ("endDate", "gte", day),
                ),
            )
            before = int(sum(count_of(u.get("units")) for u in units))
            wanted = item.quantity(kind)
            change = Change(
                object=f"{where} (contract service {contract_service})",
                before=str(before),
                after=str(wanted),
            )
            changes.append(change)
            if dry_run or not change.changed:
                continue
            body = msgspec.json.encode(
                {
                    "contractID": contract,
                    "contractServiceID": contract_service,
                    "serviceID": service,
                    "effectiveDate": day,
                    "unitChange": wanted - before,
                }
            )

            async def adjust(body: bytes = body) -> object:
                url = f"{base}/ContractServiceAdjustments"
                return await exchange(context.session, "POST", url, headers=headers, body=body)

            # Not retried blindly: an adjustment is a delta. A transient failure is re-read on
            # the next push, which adjusts by whatever difference is left.
            await retrying(adjust, attempts=1, sleep=context.sleep)
        return changes
