"""The ceiling: a bare aiohttp handler that only parses the heartbeat's JSON and answers.

The same server stack as the collector (aiohttp on uvloop, msgspec for JSON), without
authentication, validation, buffering or metrics: what this machine can do at most per process.
Run `python -m bench.bare --port PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import msgspec
import uvloop
from aiohttp import web

_REPLY = b'{"next_heartbeat_s":60,"commands":[]}'
_decode = msgspec.json.Decoder().decode


async def heartbeat(request: web.Request) -> web.Response:
    _decode(await request.read())
    return web.Response(body=_REPLY, content_type="application/json")


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/heartbeat", heartbeat)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048, reuse_address=True).start()
    print(f"bare handler on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
