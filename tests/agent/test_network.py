"""The heartbeat's `network` section (issue 20): interfaces from psutil's own records, neighbours
from each platform's ARP table in its real format, noise dropped, at most 512 neighbours, sent
when it changes or every 15 minutes, and read in the background so no cycle waits for it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from agent.network import (
    NetworkReader,
    NetworkWatcher,
    normalize_mac,
    parse_arp_a,
    parse_ip_neigh,
    parse_proc_net_arp,
)
from agent.system import Completed
from wire.messages import NetworkInfo, NetworkNeighbor

PROC_NET_ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         a4:2b:b0:11:22:33     *        eth0
192.168.1.20     0x1         0x2         3C:52:82:AA:BB:CC     *        eth0
192.168.1.30     0x1         0x0         00:00:00:00:00:00     *        eth0
192.168.1.255    0x1         0x6         ff:ff:ff:ff:ff:ff     *        eth0
224.0.0.251      0x1         0x6         01:00:5e:00:00:fb     *        eth0
"""
IP_NEIGH = """\
192.168.1.1 dev eth0 lladdr a4:2b:b0:11:22:33 REACHABLE
fe80::1 dev eth0 lladdr a4:2b:b0:11:22:33 router STALE
2001:db8::20 dev eth0 lladdr 3c:52:82:aa:bb:cc DELAY
192.168.1.40 dev eth0  FAILED
192.168.1.41 dev eth0 lladdr 00:11:22:33:44:55 INCOMPLETE
"""
WINDOWS_ARP = """\

Interface: 192.168.1.10 --- 0x7
  Internet Address      Physical Address      Type
  192.168.1.1           a4-2b-b0-11-22-33     dynamic
  192.168.1.20          3c-52-82-aa-bb-cc     dynamic
  192.168.1.255         ff-ff-ff-ff-ff-ff     static
  224.0.0.22            01-00-5e-00-00-16     static
"""
MACOS_ARP = """\
? (192.168.1.1) at a4:2b:b0:11:22:33 on en0 ifscope [ethernet]
? (192.168.1.20) at 3c:52:82:aa:bb:cc on en0 ifscope [ethernet]
? (192.168.1.50) at (incomplete) on en0 ifscope [ethernet]
? (192.168.1.255) at ff:ff:ff:ff:ff:ff on en0 ifscope [ethernet]
"""
EXPECTED = [
    NetworkNeighbor(ip="192.168.1.1", mac="a4:2b:b0:11:22:33"),
    NetworkNeighbor(ip="192.168.1.20", mac="3c:52:82:aa:bb:cc"),
]


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("A4-2B-B0-11-22-33", "a4:2b:b0:11:22:33"),
        ("0:1b:2:aa:b:c", "00:1b:02:aa:0b:0c"),  # macOS drops leading zeros
        ("00:00:00:00:00:00", None),
        ("ff:ff:ff:ff:ff:ff", None),
        ("01:00:5e:00:00:fb", None),  # IPv4 multicast
        ("33:33:00:00:00:01", None),  # IPv6 multicast
        ("a4:2b:b0:11:22", None),
        ("not a mac", None),
    ],
)
def test_macs_are_lower_case_with_colons_and_noise_is_dropped(
    text: str, normal: str | None
) -> None:
    assert normalize_mac(text) == normal


def reader(system: str, *, arp: str | None = None, tool: str = "", tmp_path: Path) -> NetworkReader:
    root = tmp_path / "root"
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    if arp is not None:
        (root / "proc/net/arp").write_text(arp)

    def run(argv: object, *, timeout: float = 10.0) -> Completed:
        return Completed(0, tool)

    return NetworkReader(system, ps=FakeInterfaces(), run=run, root=root, primary=lambda: None)


# psutil's own record type for an interface address (its module moved between psutil versions).
SNICADDR = type(next(iter(psutil.net_if_addrs().values()))[0])


class FakeInterfaces:
    """psutil's own `snicaddr` records, as `net_if_addrs()` returns them."""

    AF_LINK = psutil.AF_LINK

    def net_if_addrs(self) -> dict[str, list[object]]:
        entry = SNICADDR
        return {
            "lo": [
                entry(socket.AF_INET, "127.0.0.1", "255.0.0.0", None, None),
                entry(psutil.AF_LINK, "00:00:00:00:00:00", None, None, None),
            ],
            "eth0": [
                entry(socket.AF_INET, "192.168.1.10", "255.255.255.0", None, None),
                entry(socket.AF_INET6, "fe80::5054:ff:fe12:3456%eth0", None, None, None),
                entry(socket.AF_INET6, "2001:db8::10", None, None, None),
                entry(psutil.AF_LINK, "52:54:00:12:34:56", None, None, None),
            ],
        }


def test_linux_reads_its_interfaces_and_the_kernel_arp_table(tmp_path: Path) -> None:
    info = reader("Linux", arp=PROC_NET_ARP, tmp_path=tmp_path).read()
    assert info.macs == ["52:54:00:12:34:56"]
    assert info.addresses == ["192.168.1.10", "2001:db8::10"]
    assert info.neighbors == EXPECTED


class ServerWithDocker(FakeInterfaces):
    """A server with a public address, a container bridge and the LAN it is reached on."""

    def net_if_addrs(self) -> dict[str, list[object]]:
        interfaces = super().net_if_addrs()
        interfaces["docker0"] = [SNICADDR(socket.AF_INET, "172.17.0.1", None, None, None)]
        interfaces["eth1"] = [SNICADDR(socket.AF_INET, "84.17.3.9", None, None, None)]
        return interfaces


def test_the_default_routes_address_comes_first_then_ipv4_before_ipv6_in_numeric_order(
    tmp_path: Path,
) -> None:
    def read(primary: Callable[[], str | None]) -> list[str]:
        reader = NetworkReader("Linux", ps=ServerWithDocker(), root=tmp_path, primary=primary)
        return reader.read().addresses

    assert read(lambda: "192.168.1.10") == [
        "192.168.1.10",
        "84.17.3.9",
        "172.17.0.1",
        "2001:db8::10",
    ]
    assert read(lambda: None) == ["84.17.3.9", "172.17.0.1", "192.168.1.10", "2001:db8::10"]
    assert read(lambda: "10.9.9.9")[0] == "84.17.3.9"  # not one of its own: no preference

    def broken() -> str | None:
        raise OSError("no route")

    assert read(broken) == ["84.17.3.9", "172.17.0.1", "192.168.1.10", "2001:db8::10"]


def test_linux_without_proc_net_arp_asks_ip_neigh(tmp_path: Path) -> None:
    info = reader("Linux", tool=IP_NEIGH, tmp_path=tmp_path).read()
    assert [(n.ip, n.mac) for n in info.neighbors] == [
        ("192.168.1.1", "a4:2b:b0:11:22:33"),
        ("2001:db8::20", "3c:52:82:aa:bb:cc"),
    ]
    assert parse_ip_neigh(IP_NEIGH)[1] == ("fe80::1", "a4:2b:b0:11:22:33")  # dropped later


@pytest.mark.parametrize(("system", "output"), [("Windows", WINDOWS_ARP), ("Darwin", MACOS_ARP)])
def test_windows_and_macos_read_arp_a(system: str, output: str, tmp_path: Path) -> None:
    assert reader(system, tool=output, tmp_path=tmp_path).read().neighbors == EXPECTED


def test_the_parsers_keep_only_answered_entries() -> None:
    assert len(parse_proc_net_arp(PROC_NET_ARP)) == 4  # the 0x0 (incomplete) entry is not one
    assert len(parse_arp_a(MACOS_ARP)) == 3


def test_at_most_512_neighbours_are_sent(tmp_path: Path) -> None:
    lines = ["IP address HW type Flags HW address Mask Device"]
    for n in range(700):
        lines.append(
            f"10.0.{n // 250}.{n % 250 + 1} 0x1 0x2 02:00:00:00:{n // 256:02x}:{n % 256:02x} * eth0"
        )
    info = reader("Linux", arp="\n".join(lines) + "\n", tmp_path=tmp_path).read()
    assert len(info.neighbors) == 512


class Clock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


async def test_the_section_is_sent_when_it_changes_or_every_15_minutes() -> None:
    clock = Clock()
    readings = [NetworkInfo(macs=["52:54:00:12:34:56"])]
    watcher = NetworkWatcher(lambda: readings[-1], clock=clock)
    assert watcher.due() is None  # nothing read yet: the first cycle does not wait for it
    watcher.refresh_in_background()
    await asyncio.sleep(0.05)
    first = watcher.due()
    assert first == readings[0]
    watcher.acknowledged(first)
    assert watcher.due() is None
    clock.moment += timedelta(minutes=14)
    watcher.refresh_in_background()
    await asyncio.sleep(0.05)
    assert watcher.due() is None  # unchanged and acknowledged 14 minutes ago
    clock.moment += timedelta(minutes=1)
    assert watcher.due() == readings[0]  # 15 minutes: sent again
    watcher.acknowledged(readings[0])
    readings.append(NetworkInfo(macs=["52:54:00:12:34:56"], addresses=["192.168.1.11"]))
    clock.moment += timedelta(minutes=1)
    watcher.refresh_in_background()
    await asyncio.sleep(0.05)
    assert watcher.due() == readings[1]  # changed: sent at once
    await watcher.close()


async def test_reading_the_tables_never_delays_a_cycle() -> None:
    clock = Clock()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_read() -> NetworkInfo:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=5)
        return NetworkInfo(macs=["52:54:00:12:34:56"])

    watcher = NetworkWatcher(slow_read, clock=clock)
    watcher.refresh_in_background()  # returns at once; the reading is under way
    assert watcher.due() is None
    release.set()
    await asyncio.sleep(0.1)
    assert watcher.due() is not None
    await watcher.close()
