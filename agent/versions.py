"""Reading an installed component's version from the executable a probe found.

Each platform records versions in its own place: the package database on Linux (`dpkg-query`,
`rpm`), the file's version resource on Windows, the bundle's `Info.plist` (or the installer receipt)
on macOS. Lookups are cached per file (path, size and modification time), so steady-state cycles run
no tools.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from agent.system import CommandFailed, Runner, run_command

log = logging.getLogger(__name__)

_CACHE_LIMIT = 256
_MAX_VERSION = 128


class VersionReader:
    def __init__(self, system: str, run: Runner = run_command) -> None:
        self._system = system
        self._run = run
        self._cache: dict[tuple[str, int, int], str | None] = {}

    def version_of(self, executable: str) -> str | None:
        try:
            stat = os.stat(executable)
        except OSError:
            return None
        key = (executable, stat.st_size, stat.st_mtime_ns)
        if key in self._cache:
            return self._cache[key]
        try:
            found = self._lookup(executable)
        except CommandFailed as exc:
            log.debug("no version for %s: %s", executable, exc)
            found = None
        if found is not None:
            found = found.strip()[:_MAX_VERSION] or None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _lookup(self, executable: str) -> str | None:
        if self._system == "Linux":
            return linux_package_version(self._run, executable)
        if self._system == "Darwin":
            return macos_bundle_version(Path(executable)) or macos_receipt_version(
                self._run, executable
            )
        if self._system == "Windows":
            return windows_file_version(executable)
        return None


def linux_package_version(run: Runner, executable: str) -> str | None:
    """The version of the Debian or RPM package that owns `executable`, if any does."""
    candidates = [executable]
    # With a merged /usr a package may own /sbin/x while the process runs /usr/sbin/x, or reverse.
    if executable.startswith("/usr/"):
        candidates.append(executable[len("/usr") :])
    else:
        candidates.append("/usr" + executable)
    for path in candidates:
        package = _dpkg_owner(run, path)
        if package is not None:
            done = run(["dpkg-query", "-W", "-f=${Version}", package])
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        version = _rpm_version(run, path)
        if version is not None:
            return version
    return None


def _dpkg_owner(run: Runner, path: str) -> str | None:
    try:
        done = run(["dpkg-query", "-S", path])
    except CommandFailed:
        return None
    if done.returncode != 0:
        return None
    return parse_dpkg_search(done.stdout, path)


def parse_dpkg_search(output: str, path: str) -> str | None:
    """`dpkg-query -S` lines are `pkg[:arch][, pkg2]: /path`; diversion lines are skipped."""
    for line in output.splitlines():
        if line.startswith("diversion "):
            continue
        owners, sep, owned = line.rpartition(": ")
        if not sep or owned.strip() != path:
            continue
        first = owners.split(",")[0].strip()
        return first.split(":")[0] or None
    return None


def _rpm_version(run: Runner, path: str) -> str | None:
    try:
        done = run(["rpm", "-qf", "--queryformat", "%{VERSION}-%{RELEASE}\\n", path])
    except CommandFailed:
        return None
    if done.returncode != 0:
        return None
    first = done.stdout.strip().splitlines()
    return first[0] if first and " " not in first[0] else None


def macos_bundle_version(executable: Path) -> str | None:
    """`X.app/Contents/MacOS/x` -> `CFBundleShortVersionString` of `X.app/Contents/Info.plist`."""
    import plistlib

    for parent in executable.parents:
        info = parent / "Info.plist"
        if parent.name == "Contents" and info.is_file():
            try:
                with info.open("rb") as handle:
                    data = plistlib.load(handle)
            except (OSError, plistlib.InvalidFileException, ValueError):
                return None
            for key in ("CFBundleShortVersionString", "CFBundleVersion"):
                value = data.get(key)
                if isinstance(value, str) and value.strip():
                    return value
            return None
    return None


def macos_receipt_version(run: Runner, executable: str) -> str | None:
    """The installer package receipt that placed `executable` (`pkgutil --file-info`)."""
    done = run(["pkgutil", "--file-info", executable])
    if done.returncode != 0:
        return None
    match = re.search(r"^pkg-version:\s*(\S+)", done.stdout, re.MULTILINE)
    return match.group(1) if match else None


if sys.platform == "win32":

    def windows_file_version(executable: str) -> str | None:
        """The fixed file version (`a.b.c.d`) from the executable's version resource."""
        import ctypes
        from ctypes import wintypes

        class FixedFileInfo(ctypes.Structure):
            _fields_ = [
                ("dwSignature", wintypes.DWORD),
                ("dwStrucVersion", wintypes.DWORD),
                ("dwFileVersionMS", wintypes.DWORD),
                ("dwFileVersionLS", wintypes.DWORD),
                ("dwProductVersionMS", wintypes.DWORD),
                ("dwProductVersionLS", wintypes.DWORD),
                ("dwFileFlagsMask", wintypes.DWORD),
                ("dwFileFlags", wintypes.DWORD),
                ("dwFileOS", wintypes.DWORD),
                ("dwFileType", wintypes.DWORD),
                ("dwFileSubtype", wintypes.DWORD),
                ("dwFileDateMS", wintypes.DWORD),
                ("dwFileDateLS", wintypes.DWORD),
            ]

        dll = ctypes.WinDLL("version.dll", use_last_error=True)
        dll.GetFileVersionInfoSizeW.argtypes = [wintypes.LPCWSTR, wintypes.LPDWORD]
        dll.GetFileVersionInfoSizeW.restype = wintypes.DWORD
        dll.GetFileVersionInfoW.argtypes = [
            wintypes.LPCWSTR,
            wintypes.DWORD,
            wintypes.DWORD,
            wintypes.LPVOID,
        ]
        dll.GetFileVersionInfoW.restype = wintypes.BOOL
        dll.VerQueryValueW.argtypes = [
            wintypes.LPCVOID,
            wintypes.LPCWSTR,
            ctypes.POINTER(wintypes.LPVOID),
            ctypes.POINTER(wintypes.UINT),
        ]
        dll.VerQueryValueW.restype = wintypes.BOOL

        size = dll.GetFileVersionInfoSizeW(executable, None)
        if not size:
            return None
        buffer = ctypes.create_string_buffer(size)
        if not dll.GetFileVersionInfoW(executable, 0, size, buffer):
            return None
        pointer = wintypes.LPVOID()
        length = wintypes.UINT()
        if not dll.VerQueryValueW(buffer, "\\", ctypes.byref(pointer), ctypes.byref(length)):
            return None
        if length.value < ctypes.sizeof(FixedFileInfo) or not pointer.value:
            return None
        info = ctypes.cast(pointer, ctypes.POINTER(FixedFileInfo)).contents
        if info.dwSignature != 0xFEEF04BD:
            return None
        high, low = info.dwFileVersionMS, info.dwFileVersionLS
        return f"{high >> 16}.{high & 0xFFFF}.{low >> 16}.{low & 0xFFFF}"

else:

    def windows_file_version(executable: str) -> str | None:
        """Windows version resources exist only on Windows."""
        return None
