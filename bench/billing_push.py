"""Times `rmm-billing push --to webhook` for 2,000 clients with 8 in flight.

The receiver is a separate process (an aiohttp app that checks each signature and keeps one
delivery per Idempotency-Key, answering after a 20 ms think time, as a real endpoint would), so
the push's own CPU is measured apart. Target: under 60 s. Billing the month is not timed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = 2_000
IN_FLIGHT = 8
TARGET_SECONDS = 60.0
SECRET = "bench-webhook-secret"
THINK_S = 0.02


def serve(port: int) -> None:
    """The receiver, run as `python -m bench.billing_push serve PORT`."""
    import asyncio

    from aiohttp import web

    seen: set[str] = set()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers["X-RMM-Timestamp"]
        mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        if request.headers["X-RMM-Signature"] != "sha256=" + mac.hexdigest():
            return web.json_response({"error": "bad signature"}, status=401)
        seen.add(request.headers["Idempotency-Key"])
        await asyncio.sleep(THINK_S)
        return web.json_response({"deliveries": len(seen)}, status=202)

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bill(work: Path) -> Path:
    from billing.job import RunRequest, run_month
    from billing.months import Month
    from wire.times import parse_instant

    prices = work / "prices.toml"
    prices.write_text(
        "\n".join(
            f'[[client]]\nid = "c{n:05d}"\nname = "Client {n}"\ncurrency = "USD"\n'
            f'[[client.price]]\nfrom = "2025-01-01"\npc = "45.00"\nserver = "120.00"\n'
            for n in range(CLIENTS)
        )
    )
    rows = ",".join(
        f'{{"machine_id":"c{n:05d}-{i}","client_id":"c{n:05d}","hostname":"H{i}",'
        f'"kind":"{"server" if i == 0 else "pc"}","first_seen":"2025-06-01T00:00:00Z",'
        f'"last_seen":"2026-02-28T10:00:00Z","offboarded_at":null,"components":[]}}'
        for n in range(CLIENTS)
        for i in range(5)
    )
    inventory = work / "inventory.json"
    inventory.write_text(f'{{"as_of":"2026-03-01T00:00:00Z","machines":[{rows}]}}')
    ledger = work / "ledger.sqlite3"
    run_month(
        RunRequest(
            month=Month(2026, 3),
            prices=prices,
            out=work / "out",
            now=parse_instant("2026-03-02T00:00:00Z"),
            inventories=(inventory,),
            ledger=ledger,
        )
    )
    return ledger


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="billing-push-bench-") as scratch:
        work = Path(scratch)
        ledger = _bill(work)
        port = _free_port()
        receiver = subprocess.Popen(
            [sys.executable, "-m", "bench.billing_push", "serve", str(port)]
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            command = [sys.executable, "-m", "billing.cli", "push", "--month", "2026-03"]
            command += ["--to", "webhook", "--url", f"http://127.0.0.1:{port}/hook"]
            command += ["--ledger", str(ledger), "--in-flight", str(IN_FLIGHT)]
            env = {**os.environ, "RMM_BILLING_WEBHOOK_SECRET": SECRET}
            log = work / "push.txt"
            with log.open("w") as out:
                started = time.perf_counter()
                child = subprocess.Popen(command, env=env, stdout=out)
                _, status, usage = os.wait4(child.pid, 0)
                seconds = time.perf_counter() - started
            summary = log.read_text().splitlines()[0]
        finally:
            receiver.terminate()
            receiver.wait()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"rmm-billing push failed: {summary}")
    figures: dict[str, object] = {
        "clients": CLIENTS,
        "in_flight": IN_FLIGHT,
        "receiver_think_ms": THINK_S * 1000,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "target_seconds": TARGET_SECONDS,
        "within_target": seconds < TARGET_SECONDS,
    }
    print(
        f"billing_push: {CLIENTS:,} clients to the webhook, {IN_FLIGHT} in flight: "
        f"{figures['seconds']} s ({figures['cpu_seconds']} s CPU; target < {TARGET_SECONDS:.0f} s)"
    )
    print(summary)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
