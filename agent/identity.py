"""Who this machine is: hardware id, host name, OS name and version, and pc/server kind.

Detection reads the platform's own records, each behind a seam (a root folder for files, a `Runner`
for tools) so tests use fakes in the real formats:

- hardware id: Linux `/sys/class/dmi/id/product_uuid` (survives a re-image), falling back to
  `/etc/machine-id`; Windows `MachineGuid` (`reg query`); macOS `IOPlatformUUID` (`ioreg`).
- kind: Windows Server editions (`InstallationType`); on Linux a `graphical.target` default with a
  display manager means pc; macOS is a pc. The config's `kind` overrides detection.
- `RMM_AGENT_HOSTNAME` and `RMM_AGENT_HARDWARE_ID` override detection (containers, golden images,
  tests).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Kind
from agent.system import CommandFailed, Runner, run_command

log = logging.getLogger(__name__)

HOSTNAME_ENV = "RMM_AGENT_HOSTNAME"
HARDWARE_ID_ENV = "RMM_AGENT_HARDWARE_ID"

# Firmware placeholders that many boards ship instead of a real SMBIOS UUID: never an identity.
_PLACEHOLDER_UUIDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",
        "00020003-0004-0005-0006-000700080009",
        "12345678-1234-5678-90ab-cddeefaabbcc",
    }
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
_REG_VALUE = re.compile(r"^ {4}(.+?) {4}(REG_[A-Z_]+)(?: {4}(.*))?$")
_WINDOWS_CURRENT_VERSION = r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion"
_WINDOWS_CRYPTOGRAPHY = r"HKLM\SOFTWARE\Microsoft\Cryptography"


class IdentityError(Exception):
    """The machine's identity could not be determined."""


@dataclass(frozen=True, slots=True)
class Identity:
    hardware_id: str
    hostname: str
    os: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Host:
    """Where detection looks: platform name, filesystem root, tool runner and environment."""

    system: str = field(default_factory=platform.system)
    root: Path = Path("/")
    run: Runner = run_command
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def detect_identity(host: Host | None = None, *, kind_override: Kind | None = None) -> Identity:
    host = host or Host()
    return Identity(
        hardware_id=detect_hardware_id(host),
        hostname=detect_hostname(host),
        os=detect_os(host),
        kind=kind_override or detect_kind(host),
    )


def detect_hostname(host: Host) -> str:
    override = host.environ.get(HOSTNAME_ENV, "").strip()
    if override:
        return override[:255]
    name = socket.gethostname().strip()
    return (name or "unknown")[:255]


def detect_hardware_id(host: Host) -> str:
    override = host.environ.get(HARDWARE_ID_ENV, "").strip()
    if override:
        if len(override) > 256:
            raise IdentityError(f"{HARDWARE_ID_ENV} is longer than 256 characters")
        return override
    if host.system == "Linux":
        return linux_hardware_id(host)
    if host.system == "Windows":
        return windows_hardware_id(host)
    if host.system == "Darwin":
        return macos_hardware_id(host)
    raise IdentityError(f"no hardware id source on {host.system}; set {HARDWARE_ID_ENV}")


def linux_hardware_id(host: Host) -> str:
    """The SMBIOS product UUID if real and readable (root only), else the systemd machine id."""
    product_uuid = _read_text(host.path("/sys/class/dmi/id/product_uuid"))
    if product_uuid is not None:
        candidate = product_uuid.strip().lower()
        if _UUID.match(candidate) and candidate not in _PLACEHOLDER_UUIDS:
            return candidate
        log.info(
            "SMBIOS product UUID %r is a firmware placeholder; using the machine id", candidate
        )
    for name in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        text = _read_text(host.path(name))
        if text is None:
            continue
        candidate = text.strip().lower()
        if _MACHINE_ID.match(candidate) and candidate != "0" * 32:
            return candidate
    raise IdentityError(
        "neither /sys/class/dmi/id/product_uuid nor /etc/machine-id holds an id; "
        f"run as root or set {HARDWARE_ID_ENV}"
    )


def windows_hardware_id(host: Host) -> str:
    values = _reg_query(host, _WINDOWS_CRYPTOGRAPHY, "MachineGuid")
    guid = values.get("MachineGuid", "").strip().lower()
    if not _UUID.match(guid):
        raise IdentityError(f"MachineGuid under {_WINDOWS_CRYPTOGRAPHY} is missing or malformed")
    return guid


def macos_hardware_id(host: Host) -> str:
    done = _run(host, ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"])
    found = parse_ioreg_platform_uuid(done)
    if found is None:
        raise IdentityError("ioreg did not report an IOPlatformUUID")
    return found


def parse_ioreg_platform_uuid(output: str) -> str | None:
    match = re.search(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{36})"', output)
    return match.group(1).lower() if match else None


def parse_reg_query(output: str) -> dict[str, str]:
    """Values from `reg query KEY [/v NAME]` output: `    Name    REG_SZ    data` lines.

    reg.exe indents each value by four spaces and separates name, type and data by four spaces; key
    names (subkeys) start at the left margin and are skipped.
    """
    values: dict[str, str] = {}
    for line in output.splitlines():
        match = _REG_VALUE.match(line.rstrip("\r"))
        if match:
            values[match.group(1)] = match.group(3) or ""
    return values


def detect_os(host: Host) -> str:
    try:
        if host.system == "Linux":
            return linux_os(host)
        if host.system == "Windows":
            return windows_os(_reg_query(host, _WINDOWS_CURRENT_VERSION))
        if host.system == "Darwin":
            return macos_os(_run(host, ["sw_vers"]))
    except (IdentityError, OSError) as exc:
        log.warning("could not read the OS name: %s", exc)
    return f"{platform.system()} {platform.release()}".strip()[:255]


def linux_os(host: Host) -> str:
    release = ""
    for name in ("/etc/os-release", "/usr/lib/os-release"):
        text = _read_text(host.path(name))
        if text is not None:
            fields = parse_os_release(text)
            release = fields.get("PRETTY_NAME") or " ".join(
                part for part in (fields.get("NAME", ""), fields.get("VERSION", "")) if part
            )
            break
    kernel = (_read_text(host.path("/proc/sys/kernel/osrelease")) or "").strip()
    text = "; ".join(
        part for part in (release or "Linux", f"Linux {kernel}" if kernel else "") if part
    )
    return text[:255]


def parse_os_release(text: str) -> dict[str, str]:
    """`os-release(5)`: KEY=value lines, values optionally quoted with shell-style escapes."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[key.strip()] = value
    return fields


def windows_os(values: Mapping[str, str]) -> str:
    product = values.get("ProductName", "Windows").strip()
    build = values.get("CurrentBuild", "").strip()
    # Windows 11 still says "Windows 10" in ProductName; build 22000 and later are Windows 11.
    if product.startswith("Windows 10") and build.isdigit() and int(build) >= 22000:
        product = "Windows 11" + product[len("Windows 10") :]
    display = values.get("DisplayVersion") or values.get("ReleaseId") or ""
    text = " ".join(part for part in (product, display.strip()) if part)
    if build:
        text += f" (build {build})"
    return text[:255]


def macos_os(output: str) -> str:
    fields: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    name = fields.get("ProductName", "macOS")
    version = fields.get("ProductVersion", "")
    build = fields.get("BuildVersion", "")
    text = " ".join(part for part in (name, version) if part)
    if build:
        text += f" ({build})"
    return text[:255]


def detect_kind(host: Host) -> Kind:
    if host.system == "Windows":
        try:
            return windows_kind(_reg_query(host, _WINDOWS_CURRENT_VERSION))
        except IdentityError as exc:
            log.warning("could not read the Windows edition (%s); assuming a pc", exc)
            return "pc"
    if host.system == "Linux":
        return linux_kind(host)
    return "pc"


def windows_kind(values: Mapping[str, str]) -> Kind:
    installation = values.get("InstallationType", "").strip().lower()
    if installation.startswith("server"):
        return "server"
    if installation == "client":
        return "pc"
    return "server" if "server" in values.get("ProductName", "").lower() else "pc"


def linux_kind(host: Host) -> Kind:
    """pc iff the default target is `graphical.target` and a display manager is installed.

    `systemctl get-default` reads the `default.target` link. Debian and Ubuntu ship it pointing at
    `graphical.target` even on headless servers, where the graphical target then adds nothing; a
    desktop has a display manager registered as `display-manager.service` (gdm, sddm, lightdm...).
    """
    target = _default_target(host)
    if target != "graphical.target":
        return "server"
    for name in (
        "/etc/systemd/system/display-manager.service",
        "/run/systemd/system/display-manager.service",
        "/etc/X11/default-display-manager",
    ):
        if os.path.lexists(host.path(name)):
            return "pc"
    return "server"


def _default_target(host: Host) -> str | None:
    for name in (
        "/etc/systemd/system/default.target",
        "/run/systemd/system/default.target",
        "/usr/lib/systemd/system/default.target",
        "/lib/systemd/system/default.target",
    ):
        try:
            return Path(os.readlink(host.path(name))).name
        except OSError:
            continue
    return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
        return None
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None


def _run(host: Host, argv: list[str]) -> str:
    try:
        done = host.run(argv)
    except CommandFailed as exc:
        raise IdentityError(str(exc)) from exc
    if done.returncode != 0:
        raise IdentityError(f"{argv[0]} exited with status {done.returncode}")
    return done.stdout


def _reg_query(host: Host, key: str, value: str | None = None) -> dict[str, str]:
    argv = ["reg", "query", key]
    if value is not None:
        argv += ["/v", value]
    # /reg:64 reads the 64-bit registry view even from a 32-bit Python.
    argv.append("/reg:64")
    return parse_reg_query(_run(host, argv))
