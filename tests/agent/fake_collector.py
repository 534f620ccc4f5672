"""An in-process stand-in for the collector's agent endpoints, scripted per test.

Each route answers from a queue of scripted replies (then a default), and records what it received,
so client and loop behaviour (retries, 4xx, 401, batching) can be checked without a real collector.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeCollector:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, deque[Reply]] = {}
        # Signed commands handed out with every heartbeat until a non-`rejected` result answers
        # them, as the real collector re-delivers what is pending.
        self.pending: list[dict[str, Any]] = []
        self.heartbeat_s = 60
        self.defaults: dict[str, Reply] = {
            "/v1/enroll": Reply(
                201,
                {
                    "agent_id": "agent-1",
                    "agent_token": "rmmag_secret-token-value",
                    "machine_id": "machine-1",
                    "heartbeat_interval_s": 60,
                },
            ),
            "/v1/heartbeat": Reply(200, {"next_heartbeat_s": 60, "commands": []}),
            "/v1/events": Reply(200, None),
        }

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts.setdefault(path, deque()).extend(replies)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    def to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def results(self, command_id: str) -> list[Any]:
        return [r.json() for r in self.to(f"/v1/commands/{command_id}/result")]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body))
        queue = self.scripts.get(request.path)
        reply = queue.popleft() if queue else self.defaults.get(request.path)
        if request.path == "/v1/heartbeat" and not queue and self.pending:
            reply = Reply(200, {"next_heartbeat_s": self.heartbeat_s, "commands": self.pending})
        if request.path.endswith("/result") and json.loads(body).get("status") != "rejected":
            answered = request.path.split("/")[3]
            self.pending = [c for c in self.pending if c["command_id"] != answered]
        if reply is None:
            if request.path.startswith("/v1/commands/"):
                reply = Reply(200, {"command_id": request.path.split("/")[3], "state": "done"})
            else:
                reply = Reply(404, {"error": "not_found", "detail": "no such endpoint"})
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        payload = reply.body
        if request.path == "/v1/events" and payload is None:
            payload = {"accepted": len(json.loads(body)["events"])}
        return web.json_response(payload, status=reply.status, headers=reply.headers)
