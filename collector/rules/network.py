"""What a heartbeat's `network` section means for coverage: which MACs are a machine's own,
which neighbours count as devices, and which of those are unmanaged.

MACs are compared normalised: six octets, lower case, joined by colons (`aa:bb:cc:dd:ee:ff`;
`AA-BB-CC-DD-EE-FF` and `a:b:c:d:e:f` read the same). Broadcast, multicast (the first octet's
low bit set) and all-zero addresses are noise, never a device; the collector drops them again
whatever the agent already filtered, as it trusts no agent's input.

A device is a neighbour MAC seen by one of a client's agents. It is unmanaged as of an instant T
when it was seen in the 30 days (720 hours) before T and no machine enrolled at T and not
offboarded (nor moved away) by then owns that MAC, and nobody dismissed it (a printer, a phone)
at or before T. A device is always one client's: the same MAC seen on two clients' networks is
two devices, and neither client ever sees the other's.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wire.times import EXPIRY

UNMANAGED_WINDOW = EXPIRY
MAX_OWN_ADDRESSES = 128
_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAC = re.compile(r"^[0-9a-fA-F]{1,2}([:-])(?:[0-9a-fA-F]{1,2}\1){4}[0-9a-fA-F]{1,2}$")
_BARE_MAC = re.compile(r"^[0-9a-fA-F]{12}$")
# What agents send: already normalised (the fast path; anything else goes the long way).
_NORMAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_ODD_HEX = frozenset("13579bdf")


def normalize_mac(text: str) -> str | None:
    """The normalised form of a MAC written with colons or dashes (or as 12 bare hex digits),
    or None when `text` is not one."""
    text = text.strip()
    if _BARE_MAC.match(text):
        octets = [text[i : i + 2] for i in range(0, 12, 2)]
    elif _MAC.match(text):
        octets = re.split(r"[:-]", text)
    else:
        return None
    return ":".join(octet.rjust(2, "0").lower() for octet in octets)


def is_noise(mac: str) -> bool:
    """Broadcast, multicast and all-zero MACs (normalised) are never a device: the first
    octet's low bit is the second hex digit's."""
    return mac[1] in _ODD_HEX or mac == "00:00:00:00:00:00"


# An office's machines all report the same devices: each MAC text is worked out once.
@functools.lru_cache(maxsize=65_536)
def device_mac(text: str) -> str | None:
    """The normalised MAC of a device, or None for text that is no MAC or is noise."""
    mac = text if _NORMAL_MAC.fullmatch(text) else normalize_mac(text)
    return None if mac is None or is_noise(mac) else mac


@dataclass(frozen=True, slots=True)
class NetworkReport:
    """One machine's latest network section, as the store keeps it."""

    machine_id: str
    client_id: str
    at: datetime
    own_macs: tuple[str, ...]
    # (mac, ip) per device, one per MAC, never one of the machine's own.
    neighbors: tuple[tuple[str, str], ...]
    # The machine's own IP addresses (`own_addresses`), shown to the NOC and searched.
    addresses: tuple[str, ...] = ()

    @property
    def day(self) -> int:
        return day_number(self.at)


def network_report(
    machine_id: str,
    client_id: str,
    at: datetime,
    macs: list[str],
    neighbors: list[tuple[str, str]],
    addresses: Iterable[str] = (),
) -> NetworkReport:
    """Normalise and filter what an agent sent: noise and malformed MACs dropped, each MAC once
    (the last address given for it wins), the machine's own MACs never counted as neighbours."""
    own = sorted({mac for mac in (device_mac(m) for m in macs) if mac is not None})
    own_set = set(own)
    devices: dict[str, str] = {}
    for mac_text, ip in neighbors:
        mac = device_mac(mac_text)
        if mac is not None and mac not in own_set and ip.strip():
            devices[mac] = ip.strip()
    return NetworkReport(
        machine_id,
        client_id,
        at,
        tuple(own),
        tuple(sorted(devices.items())),
        own_addresses(addresses),
    )


def own_addresses(texts: Iterable[str]) -> tuple[str, ...]:
    """A machine's own IP addresses as the NOC reads them: each valid one once, in its
    canonical form and in the agent's order (it sends its default route's address first);
    text that is no address is dropped."""
    found: dict[str, None] = {}
    for text in texts:
        try:
            found[str(ipaddress.ip_address(text.strip()))] = None
        except ValueError:
            continue
    return tuple(found)[:MAX_OWN_ADDRESSES]


def day_number(at: datetime) -> int:
    """The UTC day of an instant, counted from the Unix epoch (how sightings are grouped)."""
    return (at.astimezone(UTC) - _EPOCH) // _DAY


@dataclass(frozen=True, slots=True)
class SightingWindow:
    """Devices seen after `since` and at or before `until` count; `first_day` is the earliest
    day row that can hold such a sighting."""

    since: datetime
    until: datetime
    first_day: int


def unmanaged_window(as_of: datetime) -> SightingWindow:
    since = as_of - UNMANAGED_WINDOW
    return SightingWindow(since=since, until=as_of, first_day=day_number(since))


def month_window(start: datetime, end: datetime) -> SightingWindow:
    """Devices seen during a month [start, end)."""
    return SightingWindow(
        since=start - timedelta(microseconds=1),
        until=end - timedelta(microseconds=1),
        first_day=day_number(start),
    )
