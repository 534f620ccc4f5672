"""The heartbeat's `network` section: this machine's interfaces and the LAN neighbours it has seen.

The collector lists neighbours whose MAC belongs to no enrolled machine, so the NOC finds the
machines that never got an agent. Own interfaces come from psutil, the default route's address
first (the one the NOC shows); neighbours from the kernel's ARP table (`/proc/net/arp`, else
`ip neigh`) on Linux and `arp -a` on Windows and macOS, so no dependency is added. MACs are
lower-case with colons; broadcast, multicast and all-zero MACs are noise and dropped; at most 512
neighbours are sent.

Reading the tables never slows a heartbeat: `NetworkWatcher.refresh` runs in the background after
a cycle, and a cycle only sends the latest reading, when it changed or 15 minutes after the last
one the collector acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.system import CommandFailed, Runner, run_command
from wire.clock import Clock
from wire.messages import MAX_NEIGHBORS, NetworkInfo, NetworkNeighbor

log = logging.getLogger(__name__)

RESEND = timedelta(minutes=15)
COLLECT_EVERY = timedelta(minutes=1)
MAX_OWN_MACS = 64
MAX_OWN_ADDRESSES = 128

_MAC_PARTS = re.compile(r"^[0-9a-fA-F]{1,2}([:-])(?:[0-9a-fA-F]{1,2}\1){4}[0-9a-fA-F]{1,2}$")
_WINDOWS_ARP = re.compile(
    r"^\s*(\d{1,3}(?:\.\d{1,3}){3})\s+([0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5})\s"
)
_BSD_ARP = re.compile(r"\((?P<ip>[0-9a-fA-F.:]+)\) at (?P<mac>[0-9a-fA-F:]+)")
# Documentation addresses (never routed anywhere real): connecting a UDP socket to one makes the
# kernel choose the default route and its source address, and sends no packet.
_ROUTE_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))


def normalize_mac(text: str) -> str | None:
    """`aa:bb:cc:dd:ee:ff`, or None for anything that is not a unicast hardware address."""
    text = text.strip()
    if not _MAC_PARTS.match(text):
        return None
    octets = [part.rjust(2, "0").lower() for part in re.split(r"[:-]", text)]
    mac = ":".join(octets)
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff") or int(octets[0], 16) & 1:
        return None  # all-zero, broadcast, or a multicast group
    return mac


def _usable_ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return None
    if address.version == 6 and address.is_link_local:
        return None
    return str(address)


def default_route_address() -> str | None:
    """The address the default route leaves from (what the NOC calls the machine's IP), IPv4
    before IPv6; None without a route."""
    for family, target in _ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                return _usable_ip(str(probe.getsockname()[0]))
        except OSError:
            continue
    return None


def ordered_addresses(addresses: Iterable[str], primary: str | None) -> list[str]:
    """The default route's address first (if it is one of them), then IPv4 before IPv6, each
    in numeric order: the first is the one to show."""

    def key(text: str) -> tuple[bool, int, int]:
        address = ipaddress.ip_address(text)
        return (text != primary, address.version, int(address))

    return sorted(set(addresses), key=key)[:MAX_OWN_ADDRESSES]


def parse_proc_net_arp(text: str) -> list[tuple[str, str]]:
    """`/proc/net/arp`: a header, then `IP HWtype Flags HWaddress Mask Device`; flags 0x0 is an
    incomplete entry (no answer yet)."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2] != "0x0":
            found.append((fields[0], fields[3]))
    return found


def parse_ip_neigh(text: str) -> list[tuple[str, str]]:
    """`ip neigh show`: `IP dev IF lladdr MAC STATE`; FAILED and INCOMPLETE have no lladdr."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if "lladdr" in fields and fields.index("lladdr") + 1 < len(fields):
            if fields[-1] in ("FAILED", "INCOMPLETE"):
                continue
            found.append((fields[0], fields[fields.index("lladdr") + 1]))
    return found


def parse_arp_a(text: str) -> list[tuple[str, str]]:
    """`arp -a` on Windows (`IP  aa-bb-..  dynamic`) and macOS/BSD (`? (IP) at a:b:.. on en0`)."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _WINDOWS_ARP.match(line)
        if match:
            found.append((match.group(1), match.group(2)))
            continue
        bsd = _BSD_ARP.search(line)
        if bsd:
            found.append((bsd.group("ip"), bsd.group("mac")))
    return found


def neighbors(pairs: Iterable[tuple[str, str]]) -> list[NetworkNeighbor]:
    seen: dict[tuple[str, str], NetworkNeighbor] = {}
    for ip_text, mac_text in pairs:
        ip, mac = _usable_ip(ip_text), normalize_mac(mac_text)
        if ip is not None and mac is not None:
            seen.setdefault((ip, mac), NetworkNeighbor(ip=ip, mac=mac))
    ordered = sorted(seen.values(), key=lambda n: (n.ip, n.mac))
    return ordered[:MAX_NEIGHBORS]


class NetworkReader:
    """Reads the interfaces and the neighbour table; each part fails alone."""

    def __init__(
        self,
        system: str,
        *,
        ps: Any = None,
        run: Runner = run_command,
        root: Path = Path("/"),
        primary: Callable[[], str | None] = default_route_address,
    ) -> None:
        self._system = system
        self._ps = ps
        self._run = run
        self._root = root
        self._primary = primary

    def read(self) -> NetworkInfo:
        macs, addresses = self._own()
        return NetworkInfo(macs=macs, addresses=addresses, neighbors=self._neighbors())

    def _own(self) -> tuple[list[str], list[str]]:
        ps = self._ps
        if ps is None:
            import psutil

            ps = psutil
        macs: set[str] = set()
        addresses: set[str] = set()
        try:
            interfaces = ps.net_if_addrs()
        except Exception as exc:
            log.debug("interfaces could not be read: %s", exc)
            return [], []
        link = getattr(ps, "AF_LINK", -1)
        for entries in interfaces.values():
            for entry in entries:
                if entry.family == link:
                    mac = normalize_mac(entry.address or "")
                    if mac is not None:
                        macs.add(mac)
                elif entry.family in (socket.AF_INET, socket.AF_INET6):
                    ip = _usable_ip(entry.address or "")
                    if ip is not None:
                        addresses.add(ip)
        try:
            primary = self._primary()
        except Exception as exc:
            log.debug("the default route could not be read: %s", exc)
            primary = None
        return sorted(macs)[:MAX_OWN_MACS], ordered_addresses(addresses, primary)

    def _neighbors(self) -> list[NetworkNeighbor]:
        try:
            if self._system == "Linux":
                arp = self._root / "proc/net/arp"
                try:
                    return neighbors(parse_proc_net_arp(arp.read_text()))
                except OSError:
                    return neighbors(parse_ip_neigh(self._tool(["ip", "neigh", "show"])))
            if self._system in ("Windows", "Darwin"):
                return neighbors(parse_arp_a(self._tool(["arp", "-a"])))
        except CommandFailed as exc:
            log.debug("the neighbour table could not be read: %s", exc)
        return []

    def _tool(self, argv: list[str]) -> str:
        done = self._run(argv, timeout=5.0)
        if done.returncode != 0:
            raise CommandFailed(f"{argv[0]} exited with status {done.returncode}")
        return done.stdout


class NetworkWatcher:
    """Decides when the heartbeat carries a `network` section, and keeps the reading fresh."""

    def __init__(self, read: Callable[[], NetworkInfo], *, clock: Clock) -> None:
        self._read = read
        self._clock = clock
        self._latest: NetworkInfo | None = None
        self._read_at: datetime | None = None
        self._sent: NetworkInfo | None = None
        self._sent_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def due(self) -> NetworkInfo | None:
        """The latest reading, if it changed since the last one acknowledged or that is old."""
        latest = self._latest
        if latest is None:
            return None
        if latest != self._sent or self._sent_at is None:
            return latest
        if self._clock.now() - self._sent_at >= RESEND:
            return latest
        return None

    def acknowledged(self, section: NetworkInfo | None) -> None:
        if section is not None:
            self._sent, self._sent_at = section, self._clock.now()

    def refresh_in_background(self) -> None:
        """Start a reading if the last one is a minute old and none is under way."""
        if self._task is not None and not self._task.done():
            return
        now = self._clock.now()
        if self._read_at is not None and now - self._read_at < COLLECT_EVERY:
            return
        self._read_at = now
        self._task = asyncio.create_task(self._refresh(), name="rmm-agent network reading")

    async def _refresh(self) -> None:
        try:
            self._latest = await asyncio.to_thread(self._read)
        except Exception as exc:
            log.debug("network reading failed: %s", exc)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
