"""The agent's files in `state_dir`: its credential, its last known status, its lock.

The directory is mode 0700 and every file 0600 (on POSIX; on Windows the installer restricts the
folder's ACL). Files are replaced atomically (write a temporary file, flush, rename), so a crash or
`kill -9` leaves either the old or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from wire.messages import Component

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
CREDENTIAL_FILE = "credential.json"
STATUS_FILE = "status.json"
LOCK_FILE = "agent.lock"
REENROLL_FILE = "reenroll-pending.json"


class StateError(Exception):
    """The state directory or one of its files cannot be used."""


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed, and tighten its mode if it is looser."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise StateError(f"{path} exists and is not a directory")
    if os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != DIR_MODE:
            path.chmod(DIR_MODE)
    return path


def write_private_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Atomically replace `path` with `data`, mode 0600; `durable` also flushes it to the disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if os.name == "posix":
            os.chmod(tmp, FILE_MODE)
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        sync_dir(path.parent)


def _replace(source: Path, target: Path) -> None:
    """`os.replace`; on Windows a reader holding `target` open briefly blocks it, so retry."""
    for attempt in range(20):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if os.name != "nt" or attempt == 19:
                raise
            time.sleep(0.05)


def sync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (POSIX; NTFS journals renames itself)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    agent_token: str
    machine_id: str
    collector_url: str
    hardware_id: str
    enrolled_at: datetime
    heartbeat_interval_s: int

    def __repr__(self) -> str:
        return f"Credential(agent_id={self.agent_id!r}, machine_id={self.machine_id!r})"


class KnownStatus(msgspec.Struct, kw_only=True):
    """What the agent last knew; survives restarts so transitions are reported once."""

    last_heartbeat_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    next_heartbeat_s: int | None = None
    components: dict[str, Component] = msgspec.field(default_factory=dict)
    executables: dict[str, str] = msgspec.field(default_factory=dict)


@dataclass(slots=True)
class StateStore:
    """Owns the files in `state_dir`; safe to use from the event loop's worker threads."""

    directory: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prepare(self) -> None:
        ensure_private_dir(self.directory)
        # Temporary files left by a write that a crash interrupted; the real file is intact.
        for leftover in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    @property
    def credential_path(self) -> Path:
        return self.directory / CREDENTIAL_FILE

    @property
    def status_path(self) -> Path:
        return self.directory / STATUS_FILE

    def load_credential(self) -> Credential | None:
        data = _read(self.credential_path)
        if data is None:
            return None
        try:
            return msgspec.json.decode(data, type=Credential)
        except msgspec.DecodeError as exc:
            raise StateError(f"{self.credential_path} is damaged ({exc}); enroll again") from exc

    def save_credential(self, credential: Credential) -> None:
        with self._lock:
            self.prepare()
            write_private_file(self.credential_path, msgspec.json.encode(credential))

    @property
    def reenroll_path(self) -> Path:
        return self.directory / REENROLL_FILE

    def reenroll_pending(self) -> bool:
        """An enrollment is waiting for a technician's approval; `run` keeps retrying it."""
        return self.reenroll_path.exists()

    def mark_reenroll_pending(self, detail: str) -> None:
        with self._lock:
            self.prepare()
            write_private_file(self.reenroll_path, msgspec.json.encode({"detail": detail}))

    def clear_reenroll(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.reenroll_path.unlink()

    def load_status(self) -> KnownStatus:
        data = _read(self.status_path)
        if data is None:
            return KnownStatus()
        try:
            return msgspec.json.decode(data, type=KnownStatus)
        except msgspec.DecodeError:
            log.warning("%s is damaged; starting from an empty status", self.status_path)
            return KnownStatus()

    def save_status(self, status: KnownStatus) -> None:
        # Rewritten every cycle: atomic but not flushed to disk each time; losing the very last
        # write in a power cut only repeats one transition event.
        with self._lock:
            write_private_file(self.status_path, msgspec.json.encode(status), durable=False)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc


class AlreadyRunning(StateError):
    """Another agent process holds the state directory."""


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the state directory's lock for the block: one agent per state directory."""
    ensure_private_dir(directory)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    handle: IO[Any] = os.fdopen(fd, "r+b")
    try:
        try:
            _lock_file(handle)
        except OSError as exc:
            raise AlreadyRunning(
                f"another rmm-agent is already using {directory} (lock {path} is held)"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        yield
    finally:
        handle.close()


if sys.platform == "win32":

    def _lock_file(handle: IO[Any]) -> None:
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

else:

    def _lock_file(handle: IO[Any]) -> None:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
