"""The command ledger, `commands.json`: what this agent accepted and every step it started.

Written durably (fsync, atomic rename) before and after each uninstall step, so that after a crash
the agent knows which steps are done, which one may still be running, and never starts one twice.
Every good write is also kept as `commands.json.bak`. A ledger that cannot be read is never
guessed at or overwritten: the agent keeps heartbeating, refuses every command as
`ledger_damaged` and says which file to inspect.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Literal

import msgspec

from agent.state import write_private_file
from wire.messages import CommandResultRequest, StepResult
from wire.signing import CommandPayload
from wire.times import format_instant

log = logging.getLogger(__name__)

LEDGER_FILE = "commands.json"
BACKUP_SUFFIX = ".bak"

StepKind = Literal["precheck", "step", "postcheck"]
StepState = Literal["starting", "running", "done"]


class StepRecord(msgspec.Struct, kw_only=True):
    """One part of an offboard: the check before a component's steps, a step, the check after.

    A step is recorded `starting` before its process exists, `running` with its process id (its
    process group on POSIX) once it does, and `done` with its result.
    """

    component: str
    kind: StepKind
    index: int = 0
    argv: list[str] = msgspec.field(default_factory=list)
    state: StepState = "done"
    pid: int | None = None
    pid_started: float | None = None
    started_at: str | None = None
    observed: str | None = None  # checks: the component's status as probed
    result: StepResult | None = None


class AcceptedCommand(msgspec.Struct, kw_only=True):
    command_id: str
    sequence: int
    type: str
    accepted_at: str
    payload: str  # base64 of the verified bytes, kept as evidence of what was run
    state: str = "running"  # running -> succeeded | failed
    result: CommandResultRequest | None = None
    order: str | None = None  # base64 of the operators' order bytes, if one came with it
    components: list[str] | None = None  # what the order named; None: the whole catalogue
    steps: list[StepRecord] = msgspec.field(default_factory=list)


class LedgerFile(msgspec.Struct, kw_only=True):
    last_sequence: int = 0  # the highest of all; what a ledger from before `sequences` knew
    commands: dict[str, AcceptedCommand] = msgspec.field(default_factory=dict)
    # Sequences only grow per agent: a machine enrolled again (a new agent id) starts afresh.
    sequences: dict[str, int] = msgspec.field(default_factory=dict)


class LedgerDamaged(Exception):
    """The ledger file cannot be read; nothing may run until a person looks at it."""


class CommandLedger:
    """What this agent accepted, durable across restarts and `kill -9` (file mode 0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LEDGER_FILE
        self.backup_path = self.path.with_name(LEDGER_FILE + BACKUP_SUFFIX)
        self.damaged: str | None = None
        self._data = self._load()

    def _load(self) -> LedgerFile:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedgerFile()
        except OSError as exc:
            return self._damaged(f"cannot be read ({exc.strerror or exc})")
        try:
            return msgspec.json.decode(raw, type=LedgerFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._damaged(f"is damaged ({exc})")

    def _damaged(self, problem: str) -> LedgerFile:
        backup = (
            f"; the last good copy is {self.backup_path}: check it and copy it over {self.path}"
            if self.backup_path.exists()
            else ""
        )
        self.damaged = (
            f"the command ledger {self.path} {problem}; every command is refused until it is "
            f"repaired or removed (removing it forgets which commands already ran){backup}"
        )
        log.error("%s", self.damaged)
        return LedgerFile()

    def _save(self) -> None:
        if self.damaged is not None:
            raise LedgerDamaged(self.damaged)
        data = msgspec.json.encode(self._data)
        write_private_file(self.path, data, durable=True)
        with contextlib.suppress(OSError):
            write_private_file(self.backup_path, data, durable=False)

    @property
    def last_sequence(self) -> int:
        return self._data.last_sequence

    def last_sequence_for(self, agent_id: str) -> int:
        if not self._data.sequences:
            return self._data.last_sequence  # a ledger written before sequences were per agent
        return self._data.sequences.get(agent_id, 0)

    def get(self, command_id: str) -> AcceptedCommand | None:
        return self._data.commands.get(command_id)

    def unfinished(self) -> list[AcceptedCommand]:
        return [c for c in self._data.commands.values() if c.state == "running"]

    def succeeded_offboard(self, agent_id: str) -> AcceptedCommand | None:
        """An offboard of this agent that finished well: the agent's departure is owed."""
        for command in self._data.commands.values():
            if (
                command.type == "offboard"
                and command.state == "succeeded"
                and self.payload_of(command).agent_id == agent_id
            ):
                return command
        return None

    def accept(
        self,
        payload: CommandPayload,
        data: bytes,
        now: datetime,
        *,
        order: bytes | None = None,
        components: list[str] | None = None,
    ) -> AcceptedCommand:
        record = AcceptedCommand(
            command_id=payload.command_id,
            sequence=payload.sequence,
            type=payload.type,
            accepted_at=format_instant(now),
            payload=base64.b64encode(data).decode(),
            order=base64.b64encode(order).decode() if order is not None else None,
            components=components,
        )
        self._data.commands[payload.command_id] = record
        self._data.last_sequence = max(self._data.last_sequence, payload.sequence)
        if not self._data.sequences and len(self._data.commands) > 1:
            # The first write of a ledger from before sequences were kept per agent: what it
            # knew belongs to the agent that accepted its latest command.
            previous = max(
                (c for c in self._data.commands.values() if c.command_id != payload.command_id),
                key=lambda c: c.sequence,
            )
            self._data.sequences[self.payload_of(previous).agent_id] = previous.sequence
        self._data.sequences[payload.agent_id] = max(
            self._data.sequences.get(payload.agent_id, 0), payload.sequence
        )
        self._save()
        return record

    def record_step(self, command_id: str, step: StepRecord) -> None:
        """Replace (or add) the record of this component's check or step, durably."""
        record = self._data.commands[command_id]
        record.steps = [
            s
            for s in record.steps
            if (s.component, s.kind, s.index) != (step.component, step.kind, step.index)
        ]
        record.steps.append(step)
        self._save()

    def step(self, command_id: str, component: str, kind: StepKind, index: int = 0) -> StepRecord:
        """A copy of the recorded check or step, or a KeyError if there is none yet."""
        for s in self._data.commands[command_id].steps:
            if (s.component, s.kind, s.index) == (component, kind, index):
                return msgspec.structs.replace(s)
        raise KeyError((component, kind, index))

    def finish(self, command_id: str, result: CommandResultRequest) -> None:
        record = self._data.commands[command_id]
        record.state = result.status
        record.result = result
        self._save()

    def payload_of(self, record: AcceptedCommand) -> CommandPayload:
        return msgspec.json.decode(base64.b64decode(record.payload), type=CommandPayload)
