"""Identity detection, fed the platforms' real file formats and tool output."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.identity import (
    Host,
    IdentityError,
    detect_hardware_id,
    detect_hostname,
    detect_identity,
    detect_kind,
    detect_os,
    parse_os_release,
    parse_reg_query,
)
from agent.system import CommandFailed, Completed

# `reg query HKLM\SOFTWARE\Microsoft\Cryptography /v MachineGuid /reg:64` (reg.exe prints CRLF).
REG_MACHINE_GUID = (
    "\r\n"
    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography\r\n"
    "    MachineGuid    REG_SZ    9C5B3A6E-1F2D-4B7A-8E4C-2A1D3F6B7C8E\r\n"
    "\r\n"
)


def reg_current_version(product: str, installation: str, build: str, display: str) -> str:
    """`reg query "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion" /reg:64`, abridged."""
    key = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
    return (
        "\r\n"
        f"{key}\r\n"
        "    SystemRoot    REG_SZ    C:\\WINDOWS\r\n"
        "    BuildBranch    REG_SZ    ni_release\r\n"
        f"    CurrentBuild    REG_SZ    {build}\r\n"
        f"    CurrentBuildNumber    REG_SZ    {build}\r\n"
        "    CurrentMajorVersionNumber    REG_DWORD    0xa\r\n"
        "    CurrentType    REG_SZ    Multiprocessor Free\r\n"
        f"    DisplayVersion    REG_SZ    {display}\r\n"
        "    EditionID    REG_SZ    Professional\r\n"
        f"    InstallationType    REG_SZ    {installation}\r\n"
        f"    ProductName    REG_SZ    {product}\r\n"
        "    RegisteredOwner    REG_SZ    \r\n"
        "    UBR    REG_DWORD    0xcb1\r\n"
        "\r\n"
        f"{key}\\Accessibility\r\n"
        f"{key}\\AppCompatFlags\r\n"
    )


# `ioreg -rd1 -c IOPlatformExpertDevice` on an Apple silicon Mac, abridged.
IOREG = """\
+-o MacBookPro18,3  <class IOPlatformExpertDevice, id 0x100000205, registered, matched, \
active, busy 0 (33 ms), retain 42>
    {
      "IOPolledInterface" = "AppleARMWatchdogTimerHibernateHandler is not serializable"
      "#address-cells" = <02000000>
      "target-type" = <"J314s">
      "manufacturer" = <"Apple Inc.">
      "compatible" = <"J314sAP","MacBookPro18,3","AppleARM">
      "IOPlatformSerialNumber" = "C02ZK0XXXXXX"
      "model" = <"MacBookPro18,3">
      "IOPlatformUUID" = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
      "name" = <"device-tree">
      "IORegistryEntryName" = "device-tree"
    }
"""

SW_VERS = "ProductName:\t\tmacOS\nProductVersion:\t\t14.4.1\nBuildVersion:\t\t23E224\n"

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""


class FakeTools:
    """Answers tool invocations from canned output; unknown tools are 'not installed'."""

    def __init__(self, answers: dict[str, Completed]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float = 10.0) -> Completed:
        self.calls.append(list(argv))
        key = " ".join(argv)
        for prefix, answer in self.answers.items():
            if key.startswith(prefix):
                return answer
        raise CommandFailed(f"{argv[0]} could not be run: No such file or directory")


def linux_root(
    tmp_path: Path,
    *,
    product_uuid: str | None = None,
    uuid_readable: bool = True,
    machine_id: str | None = None,
    default_target: str | None = None,
    display_manager: bool = False,
) -> Path:
    root = tmp_path / "root"
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    if product_uuid is not None:
        path = dmi / "product_uuid"
        path.write_text(product_uuid + "\n")
        if not uuid_readable:
            path.unlink()
            path.mkdir()  # reading a directory fails like an unreadable file does
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0-18-amd64\n")
    if machine_id is not None:
        (root / "etc/machine-id").write_text(machine_id + "\n")
    (root / "etc/os-release").write_text(OS_RELEASE)
    os.symlink("graphical.target", root / "lib/systemd/system/default.target")
    if default_target is not None:
        os.symlink(
            f"/lib/systemd/system/{default_target}", root / "etc/systemd/system/default.target"
        )
    if display_manager:
        os.symlink(
            "/lib/systemd/system/gdm3.service",
            root / "etc/systemd/system/display-manager.service",
        )
    return root


def linux(root: Path, **environ: str) -> Host:
    return Host(system="Linux", root=root, run=FakeTools({}), environ=environ)


def test_linux_uses_the_smbios_product_uuid_which_survives_a_reimage(tmp_path: Path) -> None:
    root = linux_root(
        tmp_path,
        product_uuid="4C4C4544-0042-3510-8052-B4C04F4E3732",
        machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4",
    )
    assert detect_hardware_id(linux(root)) == "4c4c4544-0042-3510-8052-b4c04f4e3732"


def test_linux_falls_back_to_machine_id_when_product_uuid_is_unreadable(tmp_path: Path) -> None:
    root = linux_root(
        tmp_path,
        product_uuid="4C4C4544-0042-3510-8052-B4C04F4E3732",
        uuid_readable=False,
        machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4",
    )
    assert detect_hardware_id(linux(root)) == "3d1219c7c4c5404aaa1f6d2a48adfda4"


def test_linux_falls_back_to_machine_id_without_dmi(tmp_path: Path) -> None:
    root = linux_root(tmp_path, machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4")
    assert detect_hardware_id(linux(root)) == "3d1219c7c4c5404aaa1f6d2a48adfda4"


@pytest.mark.parametrize(
    "placeholder",
    [
        "03000200-0400-0500-0006-000700080009",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "Not Settable",
    ],
)
def test_linux_ignores_firmware_placeholder_uuids(tmp_path: Path, placeholder: str) -> None:
    root = linux_root(
        tmp_path, product_uuid=placeholder, machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4"
    )
    assert detect_hardware_id(linux(root)) == "3d1219c7c4c5404aaa1f6d2a48adfda4"


def test_linux_without_any_id_says_how_to_fix_it(tmp_path: Path) -> None:
    root = linux_root(tmp_path)
    with pytest.raises(IdentityError, match="RMM_AGENT_HARDWARE_ID"):
        detect_hardware_id(linux(root))


def test_environment_overrides_hardware_id_and_hostname(tmp_path: Path) -> None:
    root = linux_root(tmp_path, machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4")
    host = linux(root, RMM_AGENT_HARDWARE_ID="golden-image-42", RMM_AGENT_HOSTNAME="till-3")
    assert detect_hardware_id(host) == "golden-image-42"
    assert detect_hostname(host) == "till-3"


def test_linux_os_names_distribution_and_kernel(tmp_path: Path) -> None:
    root = linux_root(tmp_path)
    assert detect_os(linux(root)) == "Debian GNU/Linux 12 (bookworm); Linux 6.1.0-18-amd64"


def test_os_release_values_may_be_quoted_or_bare() -> None:
    fields = parse_os_release(OS_RELEASE + "# comment\nBUG_REPORT_URL='x \\'y\\''\n")
    assert fields["VERSION_CODENAME"] == "bookworm"
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert fields["BUG_REPORT_URL"] == "x 'y'"


def test_linux_desktop_with_a_display_manager_is_a_pc(tmp_path: Path) -> None:
    root = linux_root(tmp_path, default_target="graphical.target", display_manager=True)
    assert detect_kind(linux(root)) == "pc"


def test_linux_multi_user_target_is_a_server(tmp_path: Path) -> None:
    root = linux_root(tmp_path, default_target="multi-user.target", display_manager=True)
    assert detect_kind(linux(root)) == "server"


def test_linux_graphical_default_without_a_display_manager_is_a_server(tmp_path: Path) -> None:
    # Debian and Ubuntu servers keep the packaged default.target -> graphical.target link.
    root = linux_root(tmp_path)
    assert detect_kind(linux(root)) == "server"


def test_config_kind_overrides_detection(tmp_path: Path) -> None:
    root = linux_root(tmp_path, machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4")
    assert detect_identity(linux(root), kind_override="pc").kind == "pc"
    assert detect_identity(linux(root)).kind == "server"


def windows(product: str, installation: str, build: str, display: str) -> Host:
    tools = FakeTools(
        {
            "reg query HKLM\\SOFTWARE\\Microsoft\\Cryptography /v MachineGuid /reg:64": Completed(
                0, REG_MACHINE_GUID
            ),
            "reg query HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion /reg:64": Completed(
                0, reg_current_version(product, installation, build, display)
            ),
        }
    )
    return Host(system="Windows", run=tools, environ={})


def test_windows_hardware_id_is_the_machine_guid() -> None:
    host = windows("Windows 10 Pro", "Client", "19045", "22H2")
    assert detect_hardware_id(host) == "9c5b3a6e-1f2d-4b7a-8e4c-2a1d3f6b7c8e"


def test_windows_11_is_named_windows_11_although_the_registry_says_10() -> None:
    host = windows("Windows 10 Pro", "Client", "22631", "23H2")
    assert detect_os(host) == "Windows 11 Pro 23H2 (build 22631)"
    assert detect_kind(host) == "pc"


@pytest.mark.parametrize("installation", ["Server", "Server Core"])
def test_windows_server_editions_are_servers(installation: str) -> None:
    host = windows("Windows Server 2022 Standard", installation, "20348", "21H2")
    assert detect_kind(host) == "server"
    assert detect_os(host) == "Windows Server 2022 Standard 21H2 (build 20348)"


def test_reg_query_parsing_keeps_empty_values_and_skips_subkeys() -> None:
    values = parse_reg_query(reg_current_version("Windows 10 Pro", "Client", "19045", "22H2"))
    assert values["RegisteredOwner"] == ""
    assert values["UBR"] == "0xcb1"
    assert "Accessibility" not in "".join(values)


def test_windows_without_a_machine_guid_is_an_error() -> None:
    host = Host(
        system="Windows",
        run=FakeTools({"reg query": Completed(1, "", "ERROR: The system was unable to find")}),
        environ={},
    )
    with pytest.raises(IdentityError):
        detect_hardware_id(host)


def test_macos_hardware_id_is_the_platform_uuid_and_it_is_a_pc() -> None:
    host = Host(
        system="Darwin",
        run=FakeTools(
            {
                "ioreg -rd1 -c IOPlatformExpertDevice": Completed(0, IOREG),
                "sw_vers": Completed(0, SW_VERS),
            }
        ),
        environ={},
    )
    identity = detect_identity(host)
    assert identity.hardware_id == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert identity.os == "macOS 14.4.1 (23E224)"
    assert identity.kind == "pc"


def test_macos_without_ioreg_answer_is_an_error() -> None:
    host = Host(system="Darwin", run=FakeTools({"ioreg": Completed(0, "")}), environ={})
    with pytest.raises(IdentityError, match="IOPlatformUUID"):
        detect_hardware_id(host)
