"""Small local stand-ins for the PSAs and a webhook receiver (the real services are outside our
network). Each implements only the documented requests a push makes, with the vendors' field
names, keeps its state in memory, and can be told to fail the next requests with given statuses.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Any]


@dataclass
class Faults:
    """Statuses to answer instead of serving, in order (429s carry Retry-After: 7)."""

    queue: list[int] = field(default_factory=list)
    requests: int = 0

    def next(self) -> web.Response | None:
        self.requests += 1
        if not self.queue:
            return None
        status = self.queue.pop(0)
        headers = {"Retry-After": "7"} if status == 429 else {}
        return web.json_response({"error": f"injected {status}"}, status=status, headers=headers)


FAULTS = web.AppKey("faults", Faults)


@web.middleware
async def _faulty(request: web.Request, handler: Handler) -> web.StreamResponse:
    faults = request.app[FAULTS]
    injected = faults.next()
    if injected is not None:
        return injected
    response: web.StreamResponse = await handler(request)
    return response


def _app() -> web.Application:
    app = web.Application(middlewares=[_faulty])
    app[FAULTS] = Faults()
    return app


# The webhook receiver: checks the signature and keeps one delivery per Idempotency-Key.


@dataclass
class Receiver:
    secret: str
    delay_s: float = 0.0  # a slow receiver, so a push can be interrupted half-way
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: int = 0
    watch_for: int = 0  # `reached` is set once this many deliveries are in
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        body = await request.read()
        stamp = request.headers["X-RMM-Timestamp"]
        mac = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        if not hmac.compare_digest(request.headers["X-RMM-Signature"], "sha256=" + mac.hexdigest()):
            return web.json_response({"error": "bad signature"}, status=401)
        key = request.headers["Idempotency-Key"]
        self.deliveries.setdefault(key, json.loads(body))
        if self.watch_for and len(self.deliveries) >= self.watch_for:
            self.reached.set()
        return web.json_response({"received": key}, status=202)

    def app(self) -> web.Application:
        app = _app()
        app.router.add_post("/hook", self.post)
        return app


# ConnectWise PSA: /finance/agreements/{id}/additions, Basic company+public:private and clientId.


@dataclass
class ConnectWiseStandIn:
    credentials: tuple[str, str, str, str]  # company, public key, private key, clientId
    agreements: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    writes: int = 0
    _next_id: int = 9000

    def _authorised(self, request: web.Request) -> bool:
        company, public, private, client_id = self.credentials
        token = base64.b64encode(f"{company}+{public}:{private}".encode()).decode()
        return (
            request.headers.get("Authorization") == f"Basic {token}"
            and request.headers.get("clientId") == client_id
        )

    def _agreement(self, request: web.Request) -> list[dict[str, Any]] | web.Response:
        if not self._authorised(request):
            return web.json_response({"code": "Unauthorized"}, status=401)
        agreement = int(request.match_info["agreement"])
        if agreement not in self.agreements:
            return web.json_response(
                {"code": "NotFound", "message": "Agreement not found"}, status=404
            )
        return self.agreements[agreement]

    async def list(self, request: web.Request) -> web.Response:
        found = self._agreement(request)
        return found if isinstance(found, web.Response) else web.json_response(found)

    async def create(self, request: web.Request) -> web.Response:
        found = self._agreement(request)
        if isinstance(found, web.Response):
            return found
        body = await request.json()
        if body.get("billCustomer") not in {"Billable", "DoNotBill", "NoCharge"}:
            return web.json_response({"code": "InvalidObject"}, status=400)
        self._next_id += 1
        self.writes += 1
        addition = {"id": self._next_id, "cancelledDate": None, **body}
        found.append(addition)
        return web.json_response(addition, status=201)

    async def patch(self, request: web.Request) -> web.Response:
        found = self._agreement(request)
        if isinstance(found, web.Response):
            return found
        addition_id = int(request.match_info["addition"])
        addition = next((a for a in found if a["id"] == addition_id), None)
        if addition is None:
            return web.json_response({"code": "NotFound"}, status=404)
        for operation in await request.json():
            assert operation["op"] == "replace"
            addition[operation["path"]] = operation["value"]
        self.writes += 1
        return web.json_response(addition)

    def app(self) -> web.Application:
        app = _app()
        path = "/finance/agreements/{agreement}/additions"
        app.router.add_get(path, self.list)
        app.router.add_post(path, self.create)
        app.router.add_patch(path + "/{addition}", self.patch)
        return app


# Autotask: ContractServices and ContractServiceUnits queries, ContractServiceAdjustments create.


@dataclass
class AutotaskStandIn:
    credentials: tuple[str, str, str]  # ApiIntegrationCode, UserName, Secret
    services: list[dict[str, Any]] = field(default_factory=list)  # ContractServices
    units: dict[int, int] = field(default_factory=dict)  # contractServiceID -> units in force
    adjustments: list[dict[str, Any]] = field(default_factory=list)

    def _authorised(self, request: web.Request) -> bool:
        code, user, secret = self.credentials
        h = request.headers
        return (h.get("ApiIntegrationCode"), h.get("UserName"), h.get("Secret")) == (
            code,
            user,
            secret,
        )

    @staticmethod
    def _matches(row: dict[str, Any], search: str) -> bool:
        for condition in json.loads(search)["filter"]:
            field_, op, value = condition["field"], condition["op"], condition["value"]
            if op == "eq" and row.get(field_) != value:
                return False
            if op in {"lte", "gte"}:
                if op == "lte" and not row[field_] <= value:
                    return False
                if op == "gte" and not row[field_] >= value:
                    return False
        return True

    async def query(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errors": ["Unauthorized"]}, status=401)
        entity, search = request.match_info["entity"], request.query["search"]
        if entity == "ContractServices":
            rows = self.services
        elif entity == "ContractServiceUnits":
            rows = [
                {
                    "id": 50_000 + service,
                    "contractServiceID": service,
                    "units": units,
                    "startDate": "2026-01-01T00:00:00Z",
                    "endDate": "2026-12-31T23:59:59Z",
                }
                for service, units in self.units.items()
            ]
        else:
            return web.json_response({"errors": [f"unknown entity {entity}"]}, status=404)
        items = [row for row in rows if self._matches(row, search)]
        return web.json_response({"items": items, "pageDetails": {"count": len(items)}})

    async def adjust(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errors": ["Unauthorized"]}, status=401)
        body = await request.json()
        for required in ("contractID", "contractServiceID", "effectiveDate", "unitChange"):
            if required not in body:
                return web.json_response({"errors": [f"{required} is required"]}, status=500)
        self.adjustments.append(body)
        service = body["contractServiceID"]
        self.units[service] = self.units.get(service, 0) + body["unitChange"]
        return web.json_response({"itemId": len(self.adjustments)})

    def app(self) -> web.Application:
        app = _app()
        app.router.add_get("/{entity}/query", self.query)
        app.router.add_post("/ContractServiceAdjustments", self.adjust)
        return app


# HaloPSA: OAuth2 client credentials, RecurringInvoice read with its lines, saved by POST.


@dataclass
class HaloStandIn:
    client_id: str
    client_secret: str
    invoices: dict[int, dict[str, Any]] = field(default_factory=dict)
    saves: int = 0
    _next_line: int = 700

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
            "client_credentials",
            self.client_id,
            self.client_secret,
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"access_token": "halo-token", "token_type": "Bearer", "expires_in": 3600}
        )

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == "Bearer halo-token"

    async def read(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        invoice = self.invoices.get(int(request.match_info["id"]))
        if invoice is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(invoice)

    async def save(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        saved = []
        for posted in await request.json():
            invoice = self.invoices[posted["id"]]
            lines = []
            for line in posted["lines"]:
                if line.get("id") is None:
                    self._next_line += 1
                    line = {**line, "id": self._next_line}
                lines.append(line)
            invoice["lines"] = lines
            saved.append(invoice)
        self.saves += 1
        return web.json_response(saved[0])

    def app(self) -> web.Application:
        app = _app()
        app.router.add_post("/auth/token", self.token)
        app.router.add_get("/api/RecurringInvoice/{id}", self.read)
        app.router.add_post("/api/RecurringInvoice", self.save)
        return app
