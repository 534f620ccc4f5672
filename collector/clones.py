"""Clone handling around enrollment and heartbeats (the rules: `collector.rules.clones`).

Detection costs the heartbeat path nothing: hostnames switching back are found in the facts
history by a background job, MACs switching back by the network flush, and known hardware
enrolling under another name while its agent is online here, before the store enrolls it. The
only check on the hot path is one dictionary lookup: whether the machine has a copy split off
that still heartbeats under its credential (then refused with 401 `clone_split`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aiohttp import web

from collector.appkeys import CLOCK, SETTINGS, STORE
from collector.errors import ApiError
from collector.rules.clones import (
    Candidate,
    Identity,
    check_enrollment,
    split_hardware_id,
)
from collector.store.base import CloneSuspicion, EnrollOutcome, EnrollRequestRecord

log = logging.getLogger(__name__)

# machine id -> the hostname of a copy split off it that has not enrolled on its own yet.
CLONE_SPLITS = web.AppKey("clone_splits", dict[str, str])


@dataclass(frozen=True, slots=True)
class EnrollmentPrep:
    """What clone handling makes of an enrollment request before the store sees it."""

    request: EnrollRequestRecord
    # The machine this request is a split-off copy of (it gets its own record).
    split_of: str | None = None
    # The machine this request makes a clone suspect of, and the two copies.
    suspect: str | None = None
    candidates: tuple[Candidate, ...] = ()


async def prepare_enrollment(
    app: web.Application, request: EnrollRequestRecord, *, now: datetime
) -> EnrollmentPrep:
    store, online_window_s = app[STORE], app[SETTINGS].online_window_s
    known, split_hostname = await store.enrolling_machine(
        request.enrollment_token_hash, request.hardware_id, now=now
    )
    if known is None:
        return EnrollmentPrep(request)
    hostname = request.facts.hostname
    if split_hostname is not None and split_hostname.lower() == hostname.lower():
        # The copy a technician split off: its own record, whatever credential it shows.
        return EnrollmentPrep(
            replace(
                request,
                hardware_id=split_hardware_id(request.hardware_id, known.machine_id),
                previous_agent_token_hash=None,
            ),
            split_of=known.machine_id,
        )
    check = check_enrollment(
        known,
        hostname,
        has_proof=request.previous_agent_token_hash is not None,
        online_since=now - timedelta(seconds=online_window_s),
    )
    if not check.suspected:
        return EnrollmentPrep(request)
    candidates = (
        Candidate("1", Identity(known.hostname)),
        Candidate("2", Identity(hostname), held=True, address=request.address),
    )
    held = replace(request, previous_agent_token_hash=None) if check.hold else request
    return EnrollmentPrep(held, suspect=known.machine_id, candidates=candidates)


async def after_enrollment(
    app: web.Application, prep: EnrollmentPrep, outcome: EnrollOutcome, *, now: datetime
) -> None:
    store = app[STORE]
    if prep.split_of is not None and not outcome.held:
        app[CLONE_SPLITS].pop(prep.split_of, None)
        await store.record_split(
            prep.split_of, outcome.machine_id, hostname=prep.request.facts.hostname, now=now
        )
    if prep.suspect is None or not outcome.held:
        return
    if await store.suspect_clone(prep.suspect, "enrollment", list(prep.candidates), now=now):
        log.warning(
            "machine %s: its hardware enrolled as %r while its agent is online as %r; "
            "flagged clone_suspected",
            prep.suspect,
            prep.candidates[1].identity.hostname,
            prep.candidates[0].identity.hostname,
        )


async def refresh_splits(app: web.Application) -> None:
    """Splits resolved through any instance reach this one's heartbeat check."""
    pending = await app[STORE].pending_splits()
    splits = app[CLONE_SPLITS]
    splits.clear()
    splits.update({machine_id: hostname.lower() for machine_id, hostname in pending.items()})


def note_resolution(app: web.Application, resolved: CloneSuspicion) -> None:
    """This instance refuses the split-off copy at once (others at their next refresh)."""
    if resolved.split_hostname is not None and resolved.split_machine_id is None:
        app[CLONE_SPLITS][resolved.machine_id] = resolved.split_hostname.lower()


def refuse_split_copy(machine_id: str) -> ApiError:
    return ApiError(
        401,
        "clone_split",
        f"this host is a copy of machine {machine_id} that a technician split off: its "
        "credential belongs to the copy kept; run `rmm-agent enroll --force` here and this host "
        "gets a machine record of its own",
    )


async def detect_clones(app: web.Application) -> list[str]:
    flagged = await app[STORE].detect_hostname_clones(app[CLOCK].now())
    for machine_id in flagged:
        log.warning("machine %s: heartbeats alternate between two hostnames; flagged", machine_id)
    return flagged
