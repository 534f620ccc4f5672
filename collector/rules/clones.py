"""Clones: two live copies behind one machine identity (a cloned golden image, a copied state
folder), found, flagged and split apart without ever revoking the real machine silently.

Two ways a clone shows:

- One agent credential heard from two hosts: its heartbeats switch from one identity (hostname,
  own MACs) to another and back within 24 hours. A single switch is a rename or a new network
  card, never a clone; A, B, A is two copies taking turns. Identities differ when both name a
  hostname and the names differ (ignoring case), or when both list MACs and no MAC is shared.
- The same hardware id enrolling while the machine's current agent is online (heard within the
  online window) under another hostname. Without proof the enrollment is held already (see
  `collector.rules.enrollment`); with proof it is held too, since a copied credential proves
  nothing about which copy is real: the genuine agent keeps working either way. A technician's
  approval still lets it through.

Either way the machine is flagged `clone_suspected`, with the two identities seen, until a
technician resolves it by keeping one. The other copy is then split off: its heartbeats under the
old credential are refused (401 `clone_split`), and its next enrollment gets a machine record of
its own, under a hardware id derived from the original (`<hardware id>#split-<machine id>`), so
billing counts each real machine once, and the kept machine keeps its record, history and token.
Copies that report the same hostname cannot be told apart at enrollment, which carries no MACs:
such a pair is refused a split until one is renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

ALTERNATION_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a heartbeat says it is; None or empty: it did not say."""

    hostname: str | None
    macs: frozenset[str] = frozenset()

    def differs(self, other: Identity) -> bool:
        if self.hostname and other.hostname and self.hostname.lower() != other.hostname.lower():
            return True
        return bool(self.macs and other.macs and not self.macs & other.macs)

    def filled_from(self, known: Identity) -> Identity:
        """This identity, with what it did not say taken from `known`."""
        return Identity(self.hostname or known.hostname, self.macs or known.macs)

    def as_json(self) -> dict[str, object]:
        return {"hostname": self.hostname, "macs": sorted(self.macs)}


@dataclass(frozen=True, slots=True)
class Track:
    """What one machine's heartbeats said lately."""

    current: Identity
    previous: Identity | None = None
    switched_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CloneClue:
    first: Identity
    second: Identity
    at: datetime


def observe(track: Track | None, seen: Identity, at: datetime) -> tuple[Track, CloneClue | None]:
    """The machine's track after a heartbeat saying `seen`, and a clue if it switched back to
    the identity it had before within the alternation window."""
    if track is None:
        return Track(seen), None
    seen = seen.filled_from(track.current)
    if not track.current.differs(seen):
        return replace(track, current=seen), None
    clue = None
    if (
        track.previous is not None
        and track.switched_at is not None
        and at - track.switched_at <= ALTERNATION_WINDOW
        and not track.previous.differs(seen)
    ):
        clue = CloneClue(first=track.previous.filled_from(seen), second=track.current, at=at)
    return Track(current=seen, previous=track.current, switched_at=at), clue


def alternation(seen: list[tuple[datetime, Identity]]) -> CloneClue | None:
    """The first switch back in a machine's identities (oldest first), if any."""
    track: Track | None = None
    for at, identity in seen:
        track, clue = observe(track, identity, at)
        if clue is not None:
            return clue
    return None


@dataclass(frozen=True, slots=True)
class MacSwitch:
    """The machine's own MACs changed to a set sharing none with the one before."""

    at: datetime
    before: frozenset[str]
    after: frozenset[str]


def mac_switch(
    last: MacSwitch | None, before: frozenset[str], after: frozenset[str], at: datetime
) -> tuple[MacSwitch | None, CloneClue | None]:
    """A network section changing the machine's MACs from `before` to `after`: the switch to
    record (None if it is no switch), and a clue when it switches back to the MACs the last
    switch left, within the alternation window."""
    if not before or not after or before & after:
        return None, None
    switch = MacSwitch(at, before, after)
    if last is not None and at - last.at <= ALTERNATION_WINDOW and last.before & after:
        return switch, CloneClue(
            first=Identity(None, last.before), second=Identity(None, last.after), at=at
        )
    return switch, None


@dataclass(frozen=True, slots=True)
class KnownMachine:
    """The machine a hardware id enrolling names, as it stands."""

    machine_id: str
    hostname: str
    last_seen: datetime
    ended: bool  # offboarded or moved away
    approved: bool  # a technician approved it enrolling again, not lapsed


@dataclass(frozen=True, slots=True)
class EnrollmentCheck:
    suspected: bool
    # Hold it even with a valid previous credential (a copy of a live machine's credential).
    hold: bool


def check_enrollment(
    known: KnownMachine | None, hostname: str, *, has_proof: bool, online_since: datetime
) -> EnrollmentCheck:
    """Known hardware enrolling under another hostname while its agent is online is a clone
    suspect; a technician's approval settles it beforehand."""
    if known is None or known.ended or known.approved:
        return EnrollmentCheck(False, False)
    live = known.last_seen >= online_since
    if not live or known.hostname.lower() == hostname.lower():
        return EnrollmentCheck(False, False)
    return EnrollmentCheck(True, has_proof)


class ResolutionError(ValueError):
    """A resolution that cannot be applied (the message says why)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    kept: Identity
    # The copy that gets its own record at its next enrollment (None: not a clone after all).
    split: Identity | None
    # Keeping a held enrollment's copy approves that enrollment.
    approve_held: bool


@dataclass(frozen=True, slots=True)
class Candidate:
    """One of the two copies seen: `id` "1" is the identity the record had first."""

    id: str
    identity: Identity
    # Seen as an enrollment held for approval (with the address it came from).
    held: bool = False
    address: str | None = None


def clue_candidates(clue: CloneClue) -> list[Candidate]:
    return [Candidate("1", clue.first), Candidate("2", clue.second)]


def resolve(candidates: list[Candidate], keep: str) -> Resolution:
    """`keep` is a candidate's `id` ("1" or "2"), or "both" (not a clone: nothing is split)."""
    by_id = {c.id: c for c in candidates}
    if keep == "both":
        return Resolution(kept=candidates[0].identity, split=None, approve_held=False)
    if keep not in by_id:
        raise ResolutionError(
            f"keep must be one of {', '.join(sorted(by_id))} or 'both', not {keep!r}"
        )
    kept = by_id[keep]
    (other,) = (c for c in candidates if c.id != keep)
    names = (kept.identity.hostname, other.identity.hostname)
    if not names[0] or not names[1] or names[0].lower() == names[1].lower():
        raise ResolutionError(
            "both copies report the same hostname, and an enrollment names no MACs: rename one "
            "(the OS, or RMM_AGENT_HOSTNAME), keep both for now, and resolve the new suspicion"
        )
    return Resolution(kept=kept.identity, split=other.identity, approve_held=kept.held)


def split_hardware_id(hardware_id: str, machine_id: str) -> str:
    """The hardware id the split-off copy enrolls under: its own, and stable across retries."""
    return f"{hardware_id}#split-{machine_id}"
