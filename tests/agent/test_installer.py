"""The Linux installer on a host without systemd: a clear refusal that names the way forward,
before anything is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import REPO

INSTALLER = REPO / "deploy" / "agent" / "install-linux.sh"

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or shutil.which("bash") is None, reason="a bash script"
)


def run_installer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALLER), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RMM_SYSTEMD_MARKER": str(tmp_path / "no-systemd-here")},
        timeout=30,
    )


def test_without_systemd_the_installer_refuses_and_names_the_non_systemd_start(
    tmp_path: Path,
) -> None:
    done = run_installer(tmp_path, "--collector-url", "https://noc", "--token-file", "/dev/null")
    assert done.returncode == 1
    assert "systemd is not the init system on this host" in done.stderr
    assert "--no-service" in done.stderr
    assert "rmm-agent run --config /etc/rmm-agent/agent.toml" in done.stderr
    assert "deploy/agent/openrc/rmm-agent" in done.stderr
    assert "Without systemd" in done.stderr
    assert done.stdout == ""  # refused before installing anything


def test_the_refusal_points_at_files_that_exist_and_a_readme_section_that_does() -> None:
    assert (REPO / "deploy" / "agent" / "openrc" / "rmm-agent").is_file()
    assert "## Without systemd" in (REPO / "deploy" / "README.md").read_text()


def test_an_invalid_approval_count_is_refused(tmp_path: Path) -> None:
    done = run_installer(tmp_path, "--no-service", "--offboard-approvals", "two")
    assert done.returncode == 1 and "--offboard-approvals must be 0 to 16" in done.stderr
