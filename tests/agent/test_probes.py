"""Component probes behind the psutil and service-manager seams, fed the tools' real output."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.config import ComponentSpec
from agent.probes import (
    LaunchdServices,
    Prober,
    ServiceQueryError,
    ServiceState,
    SystemdServices,
    executable_from_command_line,
    launchd_state,
    logged_in_users,
)
from agent.system import Completed
from agent.versions import VersionReader, linux_package_version, parse_dpkg_search
from tests.agent.test_identity import FakeTools
from wire.messages import Component


class FakeProcess:
    """What `psutil.process_iter(["name", "status"])` yields: `pid`, `info`, and `exe()`."""

    def __init__(
        self, pid: int, name: str, status: str = psutil.STATUS_SLEEPING, exe: str | None = None
    ) -> None:
        self.pid = pid
        self.info: dict[str, Any] = {"name": name, "status": status}
        self._exe = exe

    def exe(self) -> str:
        if self._exe is None:
            raise psutil.AccessDenied(self.pid, self.info["name"])
        return self._exe


class FakePsutil:
    def __init__(self, processes: Sequence[FakeProcess] = (), *, broken: bool = False) -> None:
        self.processes = list(processes)
        self.broken = broken

    def process_iter(
        self, attrs: list[str] | None = None, ad_value: Any = None
    ) -> Iterator[FakeProcess]:
        if self.broken:
            raise PermissionError(13, "Permission denied", "/proc")
        yield from self.processes

    def Process(self, pid: int | None = None) -> FakeProcess:
        for process in self.processes:
            if process.pid == pid:
                return process
        raise psutil.NoSuchProcess(pid or 0)


class FakeServices:
    def __init__(self, states: dict[str, ServiceState] | Exception) -> None:
        self.states = states
        self.asked: list[list[str]] = []

    def query(self, names: Sequence[str]) -> dict[str, ServiceState]:
        self.asked.append(list(names))
        if isinstance(self.states, Exception):
            raise self.states
        return {name: self.states[name] for name in names if name in self.states}


class NoVersions(VersionReader):
    def __init__(self) -> None:
        super().__init__("Linux", FakeTools({}))

    def version_of(self, executable: str) -> str | None:
        return None


def prober(
    specs: Sequence[ComponentSpec],
    ps: FakePsutil,
    services: FakeServices | None = None,
    *,
    system: str = "Linux",
    versions: VersionReader | None = None,
) -> Prober:
    return Prober(
        specs,
        ps=ps,
        services=services or FakeServices({}),
        versions=versions or NoVersions(),
        system=system,
    )


def statuses(components: Sequence[Component]) -> dict[str, str]:
    return {c.name: c.status for c in components}


def test_a_component_with_a_live_process_is_running() -> None:
    ps = FakePsutil([FakeProcess(10, "systemd"), FakeProcess(812, "clamd", exe="/usr/sbin/clamd")])
    sample = prober([ComponentSpec("antivirus", processes=("MsMpEng.exe", "clamd"))], ps).sample()
    assert statuses(sample.components) == {"antivirus": "running"}
    assert sample.executables == {"antivirus": "/usr/sbin/clamd"}
    assert sample.failures == ()


def test_a_zombie_does_not_count_as_running() -> None:
    ps = FakePsutil([FakeProcess(812, "clamd", status=psutil.STATUS_ZOMBIE)])
    sample = prober([ComponentSpec("antivirus", processes=("clamd",))], ps).sample()
    assert statuses(sample.components) == {"antivirus": "missing"}


def test_gone_but_still_installed_is_stopped_and_never_seen_is_missing(tmp_path: Path) -> None:
    binary = tmp_path / "clamd"
    binary.write_text("")
    specs = [
        ComponentSpec("antivirus", processes=("clamd",)),
        ComponentSpec("backup", processes=("bkpd",)),
    ]
    sample = prober(specs, FakePsutil()).sample(executables={"antivirus": str(binary)})
    assert statuses(sample.components) == {"antivirus": "stopped", "backup": "missing"}
    binary.unlink()  # uninstalled
    sample = prober(specs, FakePsutil()).sample(executables={"antivirus": str(binary)})
    assert statuses(sample.components) == {"antivirus": "missing", "backup": "missing"}


def test_windows_process_names_match_whatever_their_case() -> None:
    ps = FakePsutil([FakeProcess(4, "msmpeng.exe")])
    spec = ComponentSpec("antivirus", processes=("MsMpEng.exe",))
    assert statuses(prober([spec], ps, system="Windows").sample().components) == {
        "antivirus": "running"
    }
    assert statuses(prober([spec], ps, system="Linux").sample().components) == {
        "antivirus": "missing"
    }


def test_service_states_decide_when_no_process_runs() -> None:
    services = FakeServices(
        {
            "clamav-daemon": ServiceState("running", pid=812),
            "dnsfilter": ServiceState("stopped"),
            "veeam": ServiceState("missing"),
        }
    )
    ps = FakePsutil([FakeProcess(812, "clamd", exe="/usr/sbin/clamd")])
    specs = [
        ComponentSpec("antivirus", services=("clamav-daemon",)),
        ComponentSpec("dns_protection", services=("dnsfilter",)),
        ComponentSpec("backup", services=("veeam",)),
    ]
    sample = prober(specs, ps, services).sample()
    assert statuses(sample.components) == {
        "antivirus": "running",
        "dns_protection": "stopped",
        "backup": "missing",
    }
    assert sample.executables["antivirus"] == "/usr/sbin/clamd"
    assert services.asked == [["clamav-daemon", "dnsfilter", "veeam"]]


def test_a_broken_service_manager_fails_only_the_components_that_need_it() -> None:
    services = FakeServices(ServiceQueryError("systemctl did not answer within 5 s"))
    ps = FakePsutil([FakeProcess(812, "clamd")])
    specs = [
        ComponentSpec("antivirus", processes=("clamd",), services=("clamav-daemon",)),
        ComponentSpec("dns_protection", services=("dnsfilter",)),
        ComponentSpec("backup", services=("veeam",)),
    ]
    previous = {"dns_protection": Component(name="dns_protection", status="running", version="2.1")}
    sample = prober(specs, ps, services).sample(previous=previous)
    assert statuses(sample.components) == {
        "antivirus": "running",  # a live process needs no service manager
        "dns_protection": "running",  # the last known status stands while the probe fails
        "backup": "missing",  # nothing known before
    }
    assert {f.component for f in sample.failures} == {"dns_protection", "backup"}
    assert all("did not answer" in f.reason for f in sample.failures)
    assert sample.components[1].version == "2.1"


def test_an_unreadable_process_list_fails_only_process_probes() -> None:
    services = FakeServices({"dnsfilter": ServiceState("running")})
    specs = [
        ComponentSpec("antivirus", processes=("clamd",)),
        ComponentSpec("dns_protection", services=("dnsfilter",)),
    ]
    sample = prober(specs, FakePsutil(broken=True), services).sample()
    assert statuses(sample.components)["dns_protection"] == "running"
    assert [f.component for f in sample.failures] == ["antivirus"]
    assert "process list" in sample.failures[0].reason


def test_one_probe_raising_does_not_lose_the_others() -> None:
    class Exploding(VersionReader):
        def __init__(self) -> None:
            super().__init__("Linux", FakeTools({}))

        def version_of(self, executable: str) -> str | None:
            raise RuntimeError("boom")

    ps = FakePsutil([FakeProcess(1, "clamd", exe="/usr/sbin/clamd"), FakeProcess(2, "dnsd")])
    specs = [
        ComponentSpec("antivirus", processes=("clamd",)),
        ComponentSpec("dns_protection", processes=("dnsd",)),
    ]
    sample = prober(specs, ps, versions=Exploding()).sample()
    assert statuses(sample.components) == {"antivirus": "running", "dns_protection": "running"}


def test_versions_are_read_from_the_owning_package_once(tmp_path: Path) -> None:
    binary = tmp_path / "usr/sbin/clamd"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    tools = FakeTools(
        {
            f"dpkg-query -S {binary}": Completed(0, f"clamav-daemon: {binary}\n"),
            "dpkg-query -W -f=${Version} clamav-daemon": Completed(0, "1.0.5+dfsg-1~deb12u1"),
        }
    )
    reader = VersionReader("Linux", tools)
    ps = FakePsutil([FakeProcess(812, "clamd", exe=str(binary))])
    probe = prober([ComponentSpec("antivirus", processes=("clamd",))], ps, versions=reader)
    for _ in range(3):
        assert probe.sample().components[0].version == "1.0.5+dfsg-1~deb12u1"
    assert len(tools.calls) == 2  # looked up once, then cached


def test_dpkg_search_output_is_parsed_with_architecture_and_diversions() -> None:
    output = "diversion by dash from: /bin/sh\nclamav-daemon:amd64, clamav-base: /usr/sbin/clamd\n"
    assert parse_dpkg_search(output, "/usr/sbin/clamd") == "clamav-daemon"
    assert parse_dpkg_search("dpkg-query: no path found matching pattern", "/x") is None


def test_rpm_owned_files_get_the_rpm_version() -> None:
    tools = FakeTools(
        {
            "rpm -qf --queryformat %{VERSION}-%{RELEASE}\\n /usr/sbin/clamd": Completed(
                0, "1.0.6-1.el9\n"
            ),
        }
    )
    assert linux_package_version(tools, "/usr/sbin/clamd") == "1.0.6-1.el9"


# `systemctl show --property=Id,LoadState,ActiveState,SubState,MainPID -- a b c`: systemd prints
# the properties in its own order, one block per unit.
SYSTEMCTL_SHOW = """\
MainPID=812
Id=clamav-daemon.service
LoadState=loaded
ActiveState=active
SubState=running

MainPID=0
Id=dnsfilter.service
LoadState=loaded
ActiveState=failed
SubState=failed

MainPID=0
Id=veeamservice.service
LoadState=not-found
ActiveState=inactive
SubState=dead
"""


def test_systemd_units_are_read_in_one_systemctl_call(tmp_path: Path) -> None:
    tools = FakeTools({"systemctl show": Completed(0, SYSTEMCTL_SHOW)})
    manager = SystemdServices(tools, booted_marker=tmp_path)
    states = manager.query(["clamav-daemon", "dnsfilter", "veeamservice"])
    assert states == {
        "clamav-daemon": ServiceState("running", pid=812),
        "dnsfilter": ServiceState("stopped"),
        "veeamservice": ServiceState("missing"),
    }
    assert tools.calls[0][-4:] == ["--", "clamav-daemon", "dnsfilter", "veeamservice"]


def test_systemd_that_is_not_running_is_a_query_error(tmp_path: Path) -> None:
    manager = SystemdServices(FakeTools({}), booted_marker=tmp_path / "absent")
    with pytest.raises(ServiceQueryError, match="not the init system"):
        manager.query(["ssh"])


def test_systemctl_failing_is_a_query_error(tmp_path: Path) -> None:
    tools = FakeTools(
        {"systemctl": Completed(1, "", "Failed to connect to bus: No such file or directory\n")}
    )
    with pytest.raises(ServiceQueryError, match="Failed to connect to bus"):
        SystemdServices(tools, booted_marker=tmp_path).query(["ssh"])


# `launchctl print system/com.openssh.sshd`, abridged.
LAUNCHCTL_PRINT = """\
system/com.example.avd = {
\tactive count = 1
\tpath = /Library/LaunchDaemons/com.example.avd.plist
\ttype = LaunchDaemon
\tstate = running

\tprogram = /Library/Application Support/Example/avd
\targuments = {
\t\t/Library/Application Support/Example/avd
\t}

\tpid = 4242
\tendpoints = {
\t\t"com.example.avd.xpc" = {
\t\t\tstate = active
\t\t}
\t}
}
"""


def test_launchd_jobs_report_state_pid_and_program() -> None:
    tools = FakeTools(
        {
            "launchctl print system/com.example.avd": Completed(0, LAUNCHCTL_PRINT),
            "launchctl print system/com.example.gone": Completed(
                113, "", 'Could not find service "com.example.gone" in domain for system\n'
            ),
            "launchctl print gui/501/com.example.agent": Completed(
                0, LAUNCHCTL_PRINT.replace("state = running", "state = not running")
            ),
        }
    )
    states = LaunchdServices(tools).query(
        ["com.example.avd", "com.example.gone", "gui/501/com.example.agent"]
    )
    assert states["com.example.avd"] == ServiceState(
        "running", pid=4242, executable="/Library/Application Support/Example/avd"
    )
    assert states["com.example.gone"] == ServiceState("missing")
    assert states["gui/501/com.example.agent"].status == "stopped"


def test_launchd_nested_state_lines_are_not_the_job_state() -> None:
    text = LAUNCHCTL_PRINT.replace("\tstate = running\n", "")
    assert launchd_state(text).status == "stopped"


@pytest.mark.parametrize(
    ("image_path", "executable"),
    [
        (
            '"C:\\Program Files\\Windows Defender\\MsMpEng.exe"',
            "C:\\Program Files\\Windows Defender\\MsMpEng.exe",
        ),
        ("C:\\WINDOWS\\system32\\svchost.exe -k netsvcs -p", "C:\\WINDOWS\\system32\\svchost.exe"),
        ("", None),
    ],
)
def test_windows_service_image_paths_yield_the_program(
    image_path: str, executable: str | None
) -> None:
    assert executable_from_command_line(image_path) == executable


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc through psutil")
def test_the_real_psutil_satisfies_the_seam() -> None:
    import os

    me = psutil.Process(os.getpid()).name()
    sample = Prober(
        [ComponentSpec("self", processes=(me,))], services=FakeServices({}), system="Linux"
    ).sample()
    assert sample.components[0].status == "running"


def test_without_systemd_a_component_with_processes_is_read_from_them_and_says_so() -> None:
    # The same reading serves heartbeats and offboarding: before the fix the heartbeat kept its
    # last status ("running") while the offboard saw "probe failed" and hid why.
    services = FakeServices(ServiceQueryError("systemd is not the init system on this machine"))
    specs = [
        ComponentSpec("dns_protection", processes=("dnsmasq",), services=("dnsmasq",)),
        ComponentSpec("backup", services=("veeam",)),
    ]
    previous = {"dns_protection": Component(name="dns_protection", status="running")}
    gone = prober(specs, FakePsutil([]), services).sample(previous=previous)
    assert statuses(gone.components)["dns_protection"] == "missing"  # no process: uninstalled
    assert [f.component for f in gone.failures] == ["backup"]  # services only: unknowable
    (note,) = gone.notes
    assert note.component == "dns_protection"
    assert note.reason == (
        "services not checked: services could not be queried: "
        "systemd is not the init system on this machine"
    )
    alive = prober(specs, FakePsutil([FakeProcess(90, "dnsmasq")]), services).sample()
    assert statuses(alive.components)["dns_protection"] == "running"


# psutil's own record type for a logged-in session (its module moved between psutil versions).
SUSER = (getattr(psutil, "_ntuples", None) or psutil._common).suser


class FakeSessions:
    def __init__(self, sessions: list[Any] | Exception) -> None:
        self._sessions = sessions

    def users(self) -> list[Any]:
        if isinstance(self._sessions, Exception):
            raise self._sessions
        return self._sessions


def test_logged_in_users_are_named_once_each_and_unreadable_sessions_say_nothing() -> None:
    """Unreadable is not "nobody": the heartbeat then leaves `users` out and the collector
    keeps what it knew."""
    sessions = [
        SUSER("reception", "console", None, 1.0, 100),
        SUSER("alice", "pts/0", "10.0.0.5", 2.0, 200),
        SUSER("reception", "rdp-tcp#1", None, 3.0, 300),
        SUSER("  ", "pts/1", None, 4.0, 400),
    ]
    assert logged_in_users(FakeSessions(sessions)) == ["alice", "reception"]
    assert logged_in_users(FakeSessions([])) == []  # nobody logged in
    assert logged_in_users(FakeSessions(PermissionError("utmp unreadable"))) is None
