"""How long the pages take on a large fleet: `python -m tests.collector.web.measure_pages [N]`.

Seeds N machines (default 100,000) over 250 clients into a fresh SQLite state, serves the real app
on loopback, signs in as a person (user name, password, TOTP code) and times the sign-in and
each page over a few requests (best and median, in ms).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from collector import accounts, passwords, totp
from collector.app import create_app
from collector.secretbox import SecretBox
from collector.settings import Settings
from collector.store import open_store
from tests.collector.web.fleet import seed_sqlite
from wire.clock import SystemClock

ROUNDS = 5


async def measure(machines: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "collector.sqlite3")
        await (await open_store(db)).close()
        started = time.perf_counter()
        seed_sqlite(db, datetime.now(UTC), machines=machines, clients=250)
        seeded_s = time.perf_counter() - started
        store = await open_store(db)
        keys = Path(folder) / "keys"
        now = datetime.now(UTC)
        made = await accounts.create_user(
            store, "measure", "admin", box=SecretBox.from_keys_folder(keys), now=now, actor="m"
        )
        await store.confirm_mfa(made.user.user_id, totp.step_at(now) - 10, [], now=now)
        password = "the measuring person's password"
        await store.set_password(
            made.user.user_id, passwords.hash_password(password), now=now, actor="m"
        )
        app = create_app(
            Settings(db=db, keys_dir=str(Path(folder) / "keys")), store=store, clock=SystemClock()
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            form = await (await client.get("/signin")).text()
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            began = time.perf_counter()
            signed_in = await client.post(
                "/signin",
                data={
                    "username": "measure",
                    "password": password,
                    "code": totp.code_at(made.totp_secret, datetime.now(UTC)),
                    "csrf": csrf.group(1),
                    "next": "/",
                },
            )
            signin_ms = round((time.perf_counter() - began) * 1000, 1)
            assert signed_in.status == 200
            listing = await (await client.get("/machines")).text()
            machine = re.search(r'href="/machines/([0-9a-f-]{36})"', listing)
            assert machine is not None
            pages = {
                "overview": "/",
                "machines, first page": "/machines",
                "machines, page 1000": "/machines?page=1000",
                "machines, coverage gaps of one client": "/machines?status=gap&client="
                + re.findall(r'<option value="([0-9a-f-]{36})"', listing)[0],
                "machines, hostname search": "/machines?q=pc-0123",
                "machine page": f"/machines/{machine.group(1)}",
                "audit log": "/audit",
            }
            timings: dict[str, dict[str, float]] = {}
            for name, path in pages.items():
                samples = []
                for _ in range(ROUNDS):
                    began = time.perf_counter()
                    resp = await client.get(path)
                    await resp.read()
                    samples.append((time.perf_counter() - began) * 1000)
                    assert resp.status == 200, (path, resp.status)
                timings[name] = {
                    "best_ms": round(min(samples), 1),
                    "median_ms": round(statistics.median(samples), 1),
                }
        finally:
            await client.close()
            await store.close()
    return {
        "machines": machines,
        "seed_s": round(seeded_s, 1),
        "sign_in_ms": signin_ms,
        "pages": timings,
    }


def main() -> None:
    machines = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(asyncio.run(measure(machines)), indent=2))


if __name__ == "__main__":
    main()
