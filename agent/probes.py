"""Component probes: is each catalogue component running, stopped or missing, and which version?

A component is **running** if any of its processes (by name, zombies excluded) or services is
running. Otherwise it is **stopped** if a listed service exists, or if the executable it was last
seen running from is still on disk; with no such trace it is **missing**.

psutil sits behind a seam (`PsutilLike`), services behind `ServiceManager` (systemd, the Windows
service manager through psutil, launchd), so tests use fakes. Each component is probed alone: a
failure is reported for that component only, and the rest of the sample stands. Probes block, so
callers run them in a thread.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from agent.config import ComponentSpec
from agent.system import CommandFailed, Runner, run_command
from agent.versions import VersionReader
from wire.messages import Component, ComponentStatus

log = logging.getLogger(__name__)


class ProcessLike(Protocol):
    @property
    def pid(self) -> int: ...

    info: dict[str, Any]

    def exe(self) -> str: ...


class PsutilLike(Protocol):
    """The slice of psutil the probes use; `psutil` itself satisfies it."""

    def process_iter(
        self, attrs: list[str] | None = None, ad_value: Any = None
    ) -> Iterator[ProcessLike]: ...

    def Process(self, pid: int | None = None) -> ProcessLike: ...


class ProbeError(Exception):
    """A component's state could not be determined; the message says why."""


class ServiceQueryError(ProbeError):
    """The service manager could not be asked at all."""


@dataclass(frozen=True, slots=True)
class ServiceState:
    status: ComponentStatus
    pid: int | None = None
    executable: str | None = None


class ServiceManager(Protocol):
    def query(self, names: Sequence[str]) -> dict[str, ServiceState]:
        """The state of every named service; raises `ServiceQueryError` if none can be read."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    component: str
    reason: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe pass: a reading per catalogue component plus the failures behind any guessed ones.

    `executables` maps each component to the executable it was last seen running from, so that a
    later pass can tell *stopped* (still installed) from *missing*.
    """

    components: tuple[Component, ...]
    failures: tuple[ProbeFailure, ...] = ()
    executables: Mapping[str, str] = field(default_factory=dict)
    # Components read in a degraded way (e.g. services unknowable without systemd, so the
    # status comes from processes alone): the reading stands, the note says what was skipped.
    notes: tuple[ProbeFailure, ...] = ()


class Prober:
    def __init__(
        self,
        specs: Sequence[ComponentSpec],
        *,
        ps: PsutilLike | None = None,
        services: ServiceManager | None = None,
        versions: VersionReader | None = None,
        system: str | None = None,
    ) -> None:
        import platform

        self._specs = tuple(specs)
        self._system = system or platform.system()
        self._ps: PsutilLike = ps if ps is not None else _psutil_module()
        self._services = services if services is not None else default_service_manager(self._system)
        self._versions = versions if versions is not None else VersionReader(self._system)
        # Windows process names are case-insensitive ("MsMpEng.exe" vs "msmpeng.exe").
        self._fold = self._system == "Windows"
        self._wanted = {self._key(name) for spec in self._specs for name in spec.processes}
        self._service_names = sorted({name for spec in self._specs for name in spec.services})

    def _key(self, name: str) -> str:
        return name.casefold() if self._fold else name

    def sample(
        self,
        *,
        previous: Mapping[str, Component] | None = None,
        executables: Mapping[str, str] | None = None,
    ) -> Sample:
        """Probe every component; a failed one keeps its previous status (or `missing`)."""
        previous = previous or {}
        known = dict(executables or {})
        running, scan_error = self._scan_processes()
        services, service_error = self._query_services()
        readings: list[Component] = []
        failures: list[ProbeFailure] = []
        notes: list[ProbeFailure] = []
        for spec in self._specs:
            try:
                status, executable, note = self._evaluate(
                    spec, running, scan_error, services, service_error, known.get(spec.name)
                )
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                failures.append(ProbeFailure(spec.name, reason))
                before = previous.get(spec.name)
                readings.append(
                    Component(
                        name=spec.name,
                        status=before.status if before else "missing",
                        version=before.version if before else None,
                        required=spec.required,
                    )
                )
                continue
            if note is not None:
                notes.append(ProbeFailure(spec.name, note))
            if executable is not None and status == "running":
                known[spec.name] = executable
            version = self._version(executable) if status != "missing" else None
            readings.append(
                Component(name=spec.name, status=status, version=version, required=spec.required)
            )
        return Sample(tuple(readings), tuple(failures), known, tuple(notes))

    def _scan_processes(self) -> tuple[dict[str, list[int]], str | None]:
        found: dict[str, list[int]] = {}
        if not self._wanted:
            return found, None
        try:
            for proc in self._ps.process_iter(["name", "status"]):
                name = proc.info.get("name")
                if not name:
                    continue
                key = self._key(name)
                if key in self._wanted and proc.info.get("status") != psutil.STATUS_ZOMBIE:
                    found.setdefault(key, []).append(proc.pid)
        except Exception as exc:
            log.debug("process scan failed", exc_info=True)
            return {}, f"the process list could not be read: {exc}"
        return found, None

    def _query_services(self) -> tuple[dict[str, ServiceState], str | None]:
        if not self._service_names:
            return {}, None
        try:
            return self._services.query(self._service_names), None
        except Exception as exc:
            return {}, f"services could not be queried: {exc}"

    def _evaluate(
        self,
        spec: ComponentSpec,
        running: Mapping[str, list[int]],
        scan_error: str | None,
        services: Mapping[str, ServiceState],
        service_error: str | None,
        known_executable: str | None,
    ) -> tuple[ComponentStatus, str | None, str | None]:
        """(status, executable, note). Heartbeats and offboarding read components through this
        one function, so both degrade the same way: when services cannot be queried but the
        component also lists processes, the process list (and the executable last seen) decide,
        and the note says what could not be checked."""
        for name in spec.processes:
            for pid in running.get(self._key(name), ()):
                return "running", self._executable(pid), None
        states = [services[name] for name in spec.services if name in services]
        for state in states:
            if state.status == "running":
                executable = state.executable
                if executable is None and state.pid:
                    executable = self._executable(state.pid)
                return "running", executable, None
        if spec.processes and scan_error:
            raise ProbeError(scan_error)
        note = None
        if spec.services and service_error:
            if not spec.processes:
                raise ProbeError(service_error)
            note = f"services not checked: {service_error}"
        for state in states:
            if state.status == "stopped":
                return "stopped", state.executable or known_executable, note
        if known_executable and os.path.exists(known_executable):
            return "stopped", known_executable, note
        return "missing", None, note

    def _executable(self, pid: int) -> str | None:
        try:
            return self._ps.Process(pid).exe() or None
        except Exception:
            return None

    def _version(self, executable: str | None) -> str | None:
        if not executable:
            return None
        try:
            return self._versions.version_of(executable)
        except Exception as exc:
            log.debug("version lookup for %s failed: %s", executable, exc)
            return None


def logged_in_users(ps: Any = None) -> list[str] | None:
    """Who is logged in (console, remote desktop, ssh), by name, each once; None if unreadable
    (the heartbeat then says nothing, rather than that nobody is logged in)."""
    try:
        sessions = (ps or psutil).users()
    except Exception as exc:
        log.debug("logged-in users could not be read: %s", exc)
        return None
    names = {str(s.name).strip() for s in sessions if s.name and str(s.name).strip()}
    return sorted(name[:256] for name in names if "\x00" not in name)[:64]


def _psutil_module() -> PsutilLike:
    module: Any = psutil
    return module  # type: ignore[no-any-return]


def default_service_manager(system: str) -> ServiceManager:
    if system == "Linux":
        return SystemdServices()
    if system == "Darwin":
        return LaunchdServices()
    if system == "Windows":
        return WindowsServices()
    return UnsupportedServices(system)


@dataclass(frozen=True, slots=True)
class UnsupportedServices:
    system: str

    def query(self, names: Sequence[str]) -> dict[str, ServiceState]:
        raise ServiceQueryError(f"no service manager is supported on {self.system}")


class SystemdServices:
    """systemd units through one `systemctl show` call per pass."""

    PROPERTIES = "Id,LoadState,ActiveState,SubState,MainPID"

    def __init__(self, run: Runner = run_command, *, booted_marker: Path | None = None) -> None:
        self._run = run
        # sd_booted(3): systemd is the running init system iff this directory exists.
        self._booted_marker = booted_marker or Path("/run/systemd/system")

    def query(self, names: Sequence[str]) -> dict[str, ServiceState]:
        if not names:
            return {}
        if not self._booted_marker.is_dir():
            raise ServiceQueryError("systemd is not the init system on this machine")
        argv = ["systemctl", "show", "--no-pager", f"--property={self.PROPERTIES}", "--", *names]
        try:
            done = self._run(argv, timeout=5.0)
        except CommandFailed as exc:
            raise ServiceQueryError(str(exc)) from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise ServiceQueryError(
                f"systemctl exited with status {done.returncode}"
                + (f": {message[0]}" if message else "")
            )
        blocks = parse_systemctl_show(done.stdout)
        if len(blocks) != len(names):
            raise ServiceQueryError(
                f"systemctl answered for {len(blocks)} units, {len(names)} were asked"
            )
        return {name: systemd_state(block) for name, block in zip(names, blocks, strict=True)}


def parse_systemctl_show(output: str) -> list[dict[str, str]]:
    """`systemctl show A B` prints one `Key=Value` block per unit, separated by blank lines."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in output.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def systemd_state(properties: Mapping[str, str]) -> ServiceState:
    load = properties.get("LoadState", "")
    active = properties.get("ActiveState", "")
    if load == "not-found":
        return ServiceState("missing")
    if load in ("bad-setting", "error") and active in ("", "inactive"):
        return ServiceState("stopped")
    pid_text = properties.get("MainPID", "0")
    pid = int(pid_text) if pid_text.isdigit() and int(pid_text) > 0 else None
    if active in ("active", "reloading"):
        return ServiceState("running", pid=pid)
    return ServiceState("stopped")


class LaunchdServices:
    """launchd jobs by label, in the system domain unless the name has one (`gui/501/label`)."""

    NOT_FOUND = 113  # launchctl's exit status for "Could not find service"

    def __init__(self, run: Runner = run_command) -> None:
        self._run = run

    def query(self, names: Sequence[str]) -> dict[str, ServiceState]:
        states: dict[str, ServiceState] = {}
        for name in names:
            target = name if "/" in name else f"system/{name}"
            try:
                done = self._run(["launchctl", "print", target], timeout=5.0)
            except CommandFailed as exc:
                raise ServiceQueryError(str(exc)) from exc
            if (
                done.returncode == self.NOT_FOUND
                or "could not find service" in (done.stderr + done.stdout).lower()
            ):
                states[name] = ServiceState("missing")
            elif done.returncode != 0:
                raise ServiceQueryError(
                    f"launchctl print {target} exited with status {done.returncode}"
                )
            else:
                states[name] = launchd_state(done.stdout)
        return states


def launchd_state(output: str) -> ServiceState:
    """Reads the job's top-level `state`, `pid` and `program` lines from `launchctl print`."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        match = re.match(r"^\t(state|pid|program) = (.*)$", line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2).strip()
    pid_text = fields.get("pid", "")
    pid = int(pid_text) if pid_text.isdigit() else None
    program = fields.get("program") or None
    if fields.get("state") == "running":
        return ServiceState("running", pid=pid, executable=program)
    return ServiceState("stopped", executable=program)


def executable_from_command_line(command_line: str) -> str | None:
    """The program path of a Windows service's ImagePath (`"C:\\x y\\a.exe" -k`, `C:\\a.exe -k`)."""
    text = command_line.strip()
    if not text:
        return None
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:end] if end > 1 else None
    match = re.match(r"^(.+?\.exe)(\s|$)", text, re.IGNORECASE)
    if match:
        return match.group(1)
    return text.split()[0]


class WindowsServices:
    """Windows services through psutil's access to the service control manager."""

    def query(self, names: Sequence[str]) -> dict[str, ServiceState]:
        if sys.platform != "win32":
            raise ServiceQueryError("the Windows service manager exists only on Windows")
        states: dict[str, ServiceState] = {}
        for name in names:
            try:
                service = psutil.win_service_get(name)
                info = service.as_dict()
            except psutil.NoSuchProcess:
                states[name] = ServiceState("missing")
                continue
            except (psutil.AccessDenied, OSError) as exc:
                raise ServiceQueryError(f"service {name!r} could not be read: {exc}") from exc
            executable = executable_from_command_line(str(info.get("binpath") or ""))
            if info.get("status") == "running":
                pid = info.get("pid")
                states[name] = ServiceState(
                    "running", pid=pid if isinstance(pid, int) else None, executable=executable
                )
            else:
                states[name] = ServiceState("stopped", executable=executable)
        return states
