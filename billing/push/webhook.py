"""The signed webhook: one POST per client-month and invoice.

Body: `{"client_id", "month", "invoice_number", "invoice"}`, the invoice as the ledger holds it.
Headers: `X-RMM-Timestamp` (Unix seconds), `X-RMM-Signature: sha256=<hex>` = HMAC-SHA256 with the
shared secret over `timestamp + "." + body`, and `Idempotency-Key`, the same on every retry and
rerun for one invoice, so a receiver that saw it already can ignore it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import msgspec

from billing.push.http import exchange, retrying
from billing.push.model import Change, ClientPush, Context

SECRET_ENV = "RMM_BILLING_WEBHOOK_SECRET"


def idempotency_key(item: ClientPush) -> str:
    return f"{item.client_id}:{item.invoice.month}:{item.invoice.number}"


def body_of(item: ClientPush) -> bytes:
    head = msgspec.json.encode(
        {
            "client_id": item.client_id,
            "month": item.invoice.month,
            "invoice_number": item.invoice.number,
        }
    )
    return head[:-1] + b',"invoice":' + item.document + b"}"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class Webhook:
    name = "webhook"
    required: tuple[str, ...] = ()

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    async def push(self, context: Context, item: ClientPush, *, dry_run: bool) -> list[Change]:
        change = Change(
            object=context.base_url,
            before=None,
            after=f"invoice {item.invoice.number}: {len(item.invoice.machines)} machines",
        )
        if dry_run:
            return [change]
        body = body_of(item)
        secret = context.credentials[SECRET_ENV]

        async def post() -> object:
            # Signed afresh per attempt: a receiver may refuse stale timestamps.
            stamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json",
                "X-RMM-Timestamp": stamp,
                "X-RMM-Signature": signature(secret, stamp, body),
                "Idempotency-Key": idempotency_key(item),
            }
            return await exchange(
                context.session, "POST", context.base_url, headers=headers, body=body
            )

        await retrying(post, attempts=context.attempts, sleep=context.sleep)
        return [change]
