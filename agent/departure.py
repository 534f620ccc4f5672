"""The agent's own exit after a successful offboard: report, leave a tombstone, remove itself.

The final result is already durable in the spool. It is sent until the collector acknowledges it;
a 401 at that point also means it arrived, because the collector revokes the agent's token only
once it has recorded the final report. Then the state is removed, except a small tombstone that
stops a restarted agent from enrolling again with the token still in its config, and the
platform's self-removal step (`self_remove` in the config that `deploy/` installs) is started
detached, so it outlives this process and its service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec

from agent.client import CollectorClient, CollectorUnavailable, Rejected, Unauthorized
from agent.spool import Spool
from agent.state import write_private_file
from wire.clock import Clock
from wire.times import format_instant

log = logging.getLogger(__name__)

TOMBSTONE_FILE = "offboarded.json"
_RETRY_CAP_S = 60.0


class Tombstone(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    offboarded_at: str
    machine_id: str
    damaged: str | None = None  # set when the file exists but cannot be read


def read_tombstone(state_dir: Path) -> Tombstone | None:
    """The tombstone, if this machine was offboarded. One that exists but cannot be read still
    means offboarded: the agent never runs or enrolls again by itself because of damage."""
    path = state_dir / TOMBSTONE_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Tombstone)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        return Tombstone(
            command_id="unknown",
            offboarded_at="unknown",
            machine_id="unknown",
            damaged=f"{path} exists but cannot be read ({exc}); it still means offboarded",
        )


def clear_tombstone(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / TOMBSTONE_FILE).unlink()


async def deliver_final_result(
    client: CollectorClient, spool: Spool, command_id: str, *, sleep_cap_s: float = _RETRY_CAP_S
) -> None:
    delay = 1.0
    while True:
        items = [
            item
            for item in await asyncio.to_thread(spool.pending, 100_000)
            if item.kind == "result" and item.result().command_id == command_id
        ]
        if not items:
            return
        try:
            for item in items:
                await client.send_result(command_id, bytes(item.result().body))
        except CollectorUnavailable as exc:
            log.warning("final offboard report not delivered yet (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, sleep_cap_s)
            continue
        except Unauthorized:
            log.info("token revoked: the collector has recorded the final offboard report")
        except Rejected as exc:
            log.error("collector refused the final offboard report: %s", exc)
        await asyncio.to_thread(spool.acknowledge, items)
        return


def remove_state(state_dir: Path, tombstone: Tombstone) -> None:
    """Everything but the tombstone goes; the tombstone is written first, durably."""
    write_private_file(state_dir / TOMBSTONE_FILE, msgspec.json.encode(tombstone))
    for entry in state_dir.iterdir():
        if entry.name == TOMBSTONE_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            # The lock file is held open by this process: POSIX unlinks it anyway; Windows
            # refuses while it is open, and the next start finds it there, harmless.
            with contextlib.suppress(OSError):
                entry.unlink()


def start_detached(argv: Sequence[str]) -> None:
    """Start the platform's self-removal so that it survives this process and its service."""
    log.warning("starting self-removal: %s", list(argv))
    options: dict[str, object] = {}
    if sys.platform == "win32":
        options["creationflags"] = 0x00000008 | 0x00000200  # DETACHED_PROCESS, NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    # The argv comes from the root-owned config, never from the network.
    subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        cwd="/" if os.name == "posix" else None,
        **options,  # type: ignore[call-overload]
    )


class Departure:
    def __init__(
        self,
        *,
        client: CollectorClient,
        spool: Spool,
        state_dir: Path,
        self_remove: Sequence[str],
        clock: Clock,
        machine_id: str,
        stop: asyncio.Event,
        on_departed: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._state_dir = state_dir
        self._self_remove = tuple(self_remove)
        self._clock = clock
        self._machine_id = machine_id
        self._stop = stop
        self._on_departed = on_departed

    async def __call__(self, command_id: str) -> None:
        await deliver_final_result(self._client, self._spool, command_id)
        tombstone = Tombstone(
            command_id=command_id,
            offboarded_at=format_instant(self._clock.now()),
            machine_id=self._machine_id,
        )
        if self._on_departed is not None:
            self._on_departed()  # nothing may write into the state folder from here on
        await asyncio.to_thread(remove_state, self._state_dir, tombstone)
        log.warning("this machine is offboarded (command %s); the agent removes itself", command_id)
        if self._self_remove:
            try:
                start_detached(self._self_remove)
            except OSError as exc:
                log.error("self-removal could not start: %s", exc)
        self._stop.set()


class OnlyOnce:
    """Departs once however many ask: after a restart the resumed offboard and the 401 that a
    heartbeat meets once the collector has the final report can both ask at the same moment;
    the second waits for the first instead of removing the state folder under it."""

    def __init__(self, depart: Callable[[str], Awaitable[None]]) -> None:
        self._depart = depart
        self._departing: asyncio.Future[None] | None = None

    async def __call__(self, command_id: str) -> None:
        if self._departing is None:
            self._departing = asyncio.ensure_future(self._depart(command_id))
        await self._departing
