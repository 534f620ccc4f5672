"""The agent's service loop: enroll once, then probe, heartbeat and flush the spool every interval.

One cycle = probe the catalogue (in a worker thread), spool an event for every status transition,
send the heartbeat, then deliver whatever the spool holds. Between cycles nothing runs: the loop
waits on the stop event with a timeout of the collector's `next_heartbeat_s` plus jitter.

- Transport errors and 5xx: the whole cycle is retried with the client's backoff (capped at
  `retry_max_s`, about five minutes by default); every retry probes afresh.
- 401: the token is revoked or invalid. Logged loudly, then the agent backs off to about the cap
  (with jitter, so a fleet-wide 401 does not retry in lockstep) and tries again; it never enrolls
  again on its own (a machine that was offboarded must stay off). After a recorded successful
  offboard a 401 means the collector has the result: the `on_unauthorized` hook departs.
- Any other 4xx: logged; the next cycle comes after the normal interval.

Commands in heartbeat responses go to the `on_commands` hook, run in a task of their own so that
heartbeats go on while an uninstall step runs (one batch at a time; the collector re-delivers
anything unanswered). By default they are only logged (by id): command verification and
execution plug in there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agent.client import (
    AwaitingApproval,
    CollectorClient,
    CollectorError,
    Rejected,
    Unauthorized,
    retrying,
)
from agent.config import AGENT_COMPONENT, AgentConfig
from agent.enrolling import AgentError, enroll
from agent.events import Event, new_event
from agent.identity import Identity
from agent.network import NetworkWatcher
from agent.probes import Prober, Sample, logged_in_users
from agent.spool import Spool
from agent.spool_delivery import deliver_spool
from agent.state import Credential, KnownStatus, StateStore
from agent.version import agent_version
from wire.clock import Clock, SystemClock
from wire.messages import (
    Component,
    HeartbeatRequest,
    HeartbeatResponse,
    SignedCommand,
)
from wire.text import printable
from wire.times import format_instant

log = logging.getLogger(__name__)

OnCommands = Callable[[Sequence[SignedCommand]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

SHUTDOWN_FLUSH_S = 2.0
COMMAND_GRACE_S = 2.0
JITTER_FRACTION = 0.1
UNAUTHORIZED_JITTER = (0.5, 1.0)  # fraction of `retry_max_s` to wait after a 401
ENROLL_RETRY_JITTER = (0.75, 1.25)  # of `enroll_retry_s`, for an enrollment held for approval


class Stopping(Exception):
    """Raised out of a wait when shutdown was requested."""


class LogCommands:
    """The default `on_commands` hook: record that commands arrived (by id only), execute nothing.

    The collector delivers a pending command with every heartbeat until it is answered, so each id
    is logged as a warning once and at debug level afterwards.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    async def __call__(self, commands: Sequence[SignedCommand]) -> None:
        for command in commands:
            if command.command_id in self._seen:
                log.debug("command %s delivered again; still not executed", command.command_id)
                continue
            self._seen.add(command.command_id)
            log.warning(
                "command %s received; command execution is not enabled in this agent, "
                "so it stays pending on the collector",
                command.command_id,
            )


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        client: CollectorClient,
        state: StateStore,
        spool: Spool,
        prober: Prober,
        identity: Identity,
        hostname: Callable[[], str] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        stop: asyncio.Event | None = None,
        sleep: Sleep | None = None,
        on_commands: OnCommands | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_unauthorized: Callable[[], Awaitable[bool]] | None = None,
        offboard_policy: tuple[int, list[str]] | None = None,
        network: NetworkWatcher | None = None,
        users: Callable[[], list[str] | None] | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._state = state
        self._spool = spool
        self._prober = prober
        self._identity = identity
        self._hostname = hostname or (lambda: identity.hostname)
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.stop = stop or asyncio.Event()
        self._on_commands: OnCommands = on_commands or LogCommands()
        self._on_start = on_start
        self._on_unauthorized = on_unauthorized
        self._offboard_policy = offboard_policy or (
            config.offboard_approvals,
            config.operator_key_ids,
        )
        self._status = KnownStatus()
        self._failures: dict[str, str] = {}
        self._notes: dict[str, str] = {}
        self._flush_lock = asyncio.Lock()
        self._command_task: asyncio.Task[None] | None = None
        self._reenrolling: asyncio.Task[None] | None = None
        self._departed = False
        self._network = network
        self._users = users or logged_in_users
        self._logged_in: list[str] | None = None
        self._sleep: Sleep = sleep or self.wait
        self._retrying = retrying(max_wait=config.retry_max_s, sleep=self._sleep)
        self._self_component = Component(
            name=AGENT_COMPONENT, status="running", version=agent_version(), required=True
        )
        self.credential: Credential | None = None

    def departed(self) -> None:
        """The machine is offboarded and the state folder is going: write nothing more to it."""
        self._departed = True

    @property
    def known_executables(self) -> dict[str, str]:
        """Where each component last ran from: tells `stopped` (installed) from `missing`."""
        return dict(self._status.executables)

    async def serve(self) -> None:
        """Run until `stop` is set, then shut down within a few seconds."""
        runner = asyncio.create_task(self.run(), name="rmm-agent loop")
        stopper = asyncio.create_task(self.stop.wait(), name="rmm-agent stop")
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not runner.done():
                runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Stopping):
                await runner
            if self._reenrolling is not None:
                self._reenrolling.cancel()
                with contextlib.suppress(asyncio.CancelledError, Stopping, Exception):
                    await self._reenrolling
            await self._end_command_work()
            if self._network is not None:
                await self._network.close()
        await self.shutdown()

    def _start_command_work(self, work: Callable[[], Awaitable[None]], what: str) -> bool:
        """Run `work()` in the command task unless a command is already running there."""
        if self._command_task is not None and not self._command_task.done():
            return False

        async def guarded() -> None:
            try:
                await work()
            except Exception:
                log.exception("%s failed", what)

        self._command_task = asyncio.create_task(guarded(), name=f"rmm-agent {what}")
        return True

    async def _end_command_work(self) -> None:
        """On shutdown: let a quick command finish; a long step is left to the resume on the
        next start (it runs on in its own session, recorded in the ledger)."""
        task = self._command_task
        if task is None or task.done():
            return
        _, pending = await asyncio.wait({task}, timeout=COMMAND_GRACE_S)
        if pending:
            log.warning("a command is still running at shutdown; it resumes at the next start")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait(self, seconds: float) -> None:
        """Sleep for `seconds`, or raise `Stopping` as soon as shutdown is requested."""
        if self.stop.is_set():
            raise Stopping
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self.stop.wait()
        except TimeoutError:
            return
        raise Stopping

    async def run(self) -> None:
        self.credential = await self._ensure_enrolled()
        self._client.with_token(self.credential.agent_token)
        if await asyncio.to_thread(self._state.reenroll_pending):
            self._reenrolling = asyncio.create_task(
                self._keep_reenrolling(self.credential), name="rmm-agent re-enrollment"
            )
        if self.credential.collector_url != self._config.collector_url:
            log.warning(
                "enrolled with %s but configured for %s; using the configured collector",
                self.credential.collector_url,
                self._config.collector_url,
            )
        self._status = await asyncio.to_thread(self._state.load_status)
        await self._spool_event("agent.started", {"version": agent_version()})
        if self._on_start is not None:
            self._start_command_work(self._on_start, "resuming commands")
        log.info(
            "agent %s started (version %s, %s %s, %d components)",
            self.credential.agent_id,
            agent_version(),
            self._identity.kind,
            self._identity.os,
            len(self._config.components) + 1,
        )
        interval = float(self._status.next_heartbeat_s or self.credential.heartbeat_interval_s)
        while True:
            try:
                async for attempt in self._retrying:
                    with attempt:
                        response = await self.cycle()
            except Unauthorized as exc:
                if self._on_unauthorized is not None and await self._on_unauthorized():
                    await self._sleep(0)  # departed: `stop` is set
                    continue
                delay = self._config.retry_max_s * self._rng.uniform(*UNAUTHORIZED_JITTER)
                log.error(
                    "THE COLLECTOR REFUSED THIS AGENT'S TOKEN (%s). The token was revoked or is "
                    "invalid, e.g. the machine was enrolled again elsewhere. This agent will not "
                    "re-enroll on its own; run `rmm-agent enroll --force` to enroll it again. "
                    "Retrying in %.0f s.",
                    exc.detail,
                    delay,
                )
                await self._sleep(delay)
                continue
            except Rejected as exc:
                log.error("heartbeat refused: %s", printable(str(exc)))
                await self._sleep(self._with_jitter(interval))
                continue
            interval = float(max(1, response.next_heartbeat_s))
            if response.commands:
                await self._deliver_commands(response.commands)
            await self._sleep(self._with_jitter(interval))

    def _with_jitter(self, interval: float) -> float:
        return interval + self._rng.uniform(0.0, interval * JITTER_FRACTION)

    async def cycle(self) -> HeartbeatResponse:
        """Probe, heartbeat, flush. Raises what the heartbeat raised; flush problems wait."""
        cpu_start = time.process_time()
        sample = await asyncio.to_thread(self._probe)
        approvals, operator_key_ids = self._offboard_policy
        network = self._network.due() if self._network is not None else None
        request = HeartbeatRequest(
            components=[self._self_component, *sample.components],
            hostname=self._hostname(),
            os=self._identity.os,
            kind=self._identity.kind,
            key_ids=self._config.key_ids,
            agent_time=format_instant(self._clock.now()),
            agent_version=agent_version(),
            offboard_approvals=approvals,
            operator_key_ids=operator_key_ids,
            users=self._logged_in,
            network=network,
        )
        attempt_at = self._clock.now()
        try:
            response = await self._client.heartbeat(request)
        except CollectorError as exc:
            self._status.last_attempt_at = attempt_at
            self._status.last_error = str(exc)
            await self._save_status()
            raise
        self._status.last_attempt_at = attempt_at
        self._status.last_heartbeat_at = attempt_at
        self._status.last_error = None
        self._status.next_heartbeat_s = response.next_heartbeat_s
        await self._save_status()
        if self._network is not None:
            self._network.acknowledged(network)
            self._network.refresh_in_background()  # read for a later cycle, never this one
        await self.flush()
        log.debug(
            "heartbeat acknowledged: %d components, next in %d s, %.1f ms CPU",
            len(request.components),
            response.next_heartbeat_s,
            (time.process_time() - cpu_start) * 1000,
        )
        return response

    def _probe(self) -> Sample:
        """Runs in a worker thread: probe, spool transitions and probe failures, remember them."""
        sample = self._prober.sample(
            previous=self._status.components, executables=self._status.executables
        )
        self._logged_in = self._users()
        for component in sample.components:
            before = self._status.components.get(component.name)
            if (
                before is None
                or before.status != component.status
                or before.version != component.version
            ):
                log.info(
                    "component %s: %s -> %s%s",
                    component.name,
                    before.status if before else "unknown",
                    component.status,
                    f" ({component.version})" if component.version else "",
                )
                self._put_event(
                    new_event(
                        "component.changed",
                        {
                            "name": component.name,
                            "from": before.status if before else None,
                            "to": component.status,
                            "version": component.version,
                            "required": component.required,
                        },
                        clock=self._clock,
                    )
                )
        failures = {failure.component: failure.reason for failure in sample.failures}
        for name, reason in failures.items():
            if self._failures.get(name) != reason:
                log.warning("probe for %s failed: %s", name, reason)
                self._put_event(
                    new_event(
                        "probe.failed",
                        {"component": name, "reason": reason[:500]},
                        clock=self._clock,
                    )
                )
        for name in self._failures.keys() - failures.keys():
            log.info("probe for %s works again", name)
        self._failures = failures
        notes = {note.component: note.reason for note in sample.notes}
        for name, reason in notes.items():
            if self._notes.get(name) != reason:
                log.warning("component %s is read in a degraded way: %s", name, reason)
                self._put_event(
                    new_event(
                        "probe.degraded",
                        {"component": name, "reason": reason[:500]},
                        clock=self._clock,
                    )
                )
        self._notes = notes
        self._status.components = {component.name: component for component in sample.components}
        self._status.executables = dict(sample.executables)
        return sample

    async def flush(self) -> int:
        """Deliver the spool in order; returns how many items the collector acknowledged.

        One flush at a time: heartbeats and the command task both flush, and must not send the
        same item twice."""
        if self._departed:
            return 0
        async with self._flush_lock:
            return await deliver_spool(self._spool, self._client)

    async def _deliver_commands(self, commands: Sequence[SignedCommand]) -> None:
        ids = [c.command_id for c in commands]
        if not self._start_command_work(
            lambda: self._on_commands(commands), f"handling commands {ids}"
        ):
            log.debug("a command is running; commands %s wait for their next delivery", ids)

    async def _ensure_enrolled(self) -> Credential:
        credential = await asyncio.to_thread(self._state.load_credential)
        if credential is not None:
            return credential
        if not self._config.enrollment_token:
            raise AgentError(
                f"this machine is not enrolled and {self._config.source} has no enrollment_token"
            )
        log.info("not enrolled yet; enrolling with %s", self._config.collector_url)
        while True:
            try:
                return await self._enroll(None)
            except AwaitingApproval as held:
                await self._sleep(self._held_enrollment(held))

    async def _enroll(self, previous: Credential | None) -> Credential:
        try:
            return await enroll(
                self._config,
                self._identity,
                self._client,
                self._state,
                retry_sleep=self._sleep,
                clock=self._clock,
                previous=previous,
            )
        except Rejected as exc:
            raise AgentError(f"enrollment refused: {exc}") from exc

    def _held_enrollment(self, held: AwaitingApproval) -> float:
        delay = self._config.enroll_retry_s * self._rng.uniform(*ENROLL_RETRY_JITTER)
        log.warning(
            "the collector holds this enrollment for a technician's approval (%s); a technician "
            "approves it with `rmm-collector machine approve-reenroll MACHINE_ID` or on the "
            "machine's page. Asking again in %.0f s.",
            printable(held.detail),
            delay,
        )
        return delay

    async def _keep_reenrolling(self, previous: Credential) -> None:
        """`enroll --force` was held: heartbeat with the old credential, and ask again every few
        minutes until the collector answers with a new one."""
        while True:
            await self.wait(self._config.enroll_retry_s * self._rng.uniform(*ENROLL_RETRY_JITTER))
            try:
                credential = await self._enroll(previous)
            except AwaitingApproval as held:
                self._held_enrollment(held)
                continue
            except (CollectorError, AgentError) as exc:
                log.warning("enrolling again failed (%s); trying again later", exc)
                continue
            self.credential = credential
            self._client.with_token(credential.agent_token)
            log.warning("enrolled again as agent %s; heartbeats now use it", credential.agent_id)
            return

    async def _spool_event(self, event_type: str, detail: dict[str, Any]) -> None:
        event = new_event(event_type, detail, clock=self._clock)
        await asyncio.to_thread(self._put_event, event)

    def _put_event(self, event: Event) -> None:
        """Spool one event; a full or failing disk costs the event, never the agent."""
        if self._departed:
            return
        try:
            self._spool.put_event(event)
        except OSError as exc:
            log.error("could not spool %s event %s: %s", event.type, event.event_id, exc)

    async def _save_status(self) -> None:
        if self._departed:
            return
        try:
            await asyncio.to_thread(self._state.save_status, self._status)
        except OSError as exc:
            log.warning("could not save %s: %s", self._state.status_path, exc)

    async def shutdown(self) -> None:
        """Record the stop, then give the spool a short chance to reach the collector."""
        if self.credential is None:
            return
        if self._departed:
            log.info("agent stopped: this machine is offboarded")
            return
        await self._spool_event("agent.stopped", {"version": agent_version()})
        try:
            async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                await self.flush()
        except TimeoutError:
            log.info("collector did not answer during shutdown; the spool keeps what is owed")
        await self._save_status()
        log.info("agent stopped")
