"""The TOML config: the documented example loads; every mistake names its key and the problem."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import ConfigError, load_config, parse_config
from wire.signing import key_id_for_raw, pin_line

PIN = pin_line(Ed25519PrivateKey.generate().public_key())
K1, KEY = PIN.split(":")
ALICE = pin_line(Ed25519PrivateKey.generate().public_key())
BOB = pin_line(Ed25519PrivateKey.generate().public_key())
SMALL_ORDER = base64.b64encode(
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
).decode()
SMALL_ORDER_ID = key_id_for_raw(base64.b64decode(SMALL_ORDER))

EXAMPLE = f"""
collector_url = "https://noc.example.net:8443"
enrollment_token = "rmmen_example"
state_dir = "/var/lib/rmm-agent"
command_keys = ["{PIN}"]
operator_keys = ["{ALICE}", "{BOB}"]
kind = "server"
[[component]]
name = "antivirus"
required = true
processes = ["MsMpEng.exe", "clamd"]
services = ["WinDefend", "clamav-daemon"]
uninstall = [["apt-get", "-y", "purge", "clamav-daemon"]]
[[component]]
name = "backup"
required = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.collector_url == "https://noc.example.net:8443"
    assert config.enrollment_token == "rmmen_example"
    assert config.state_dir == Path("/var/lib/rmm-agent")
    assert config.kind == "server"
    assert config.key_ids == [K1]
    assert config.command_keys[0].public_key == base64.b64decode(KEY)
    assert config.operator_key_ids == [ALICE.split(":")[0], BOB.split(":")[0]]
    assert config.offboard_approvals == 2 and config.offboard_warnings() == []
    antivirus, backup = config.components
    assert antivirus.processes == ("MsMpEng.exe", "clamd")
    assert antivirus.services == ("WinDefend", "clamav-daemon")
    assert antivirus.uninstall == (("apt-get", "-y", "purge", "clamav-daemon"),)
    assert antivirus.required is True
    assert backup.required is False
    assert backup.processes == ()
    assert config.retry_max_s == 300


def test_the_enrollment_token_never_appears_in_the_config_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert "rmmen_example" not in repr(config)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_config(
        write(
            tmp_path,
            'collector_url = "https://noc.example.net"\nstate_dir = "state"\nca_file = "ca.pem"\n',
        )
    )
    assert config.state_dir == tmp_path / "state"
    assert config.ca_file == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9000/rmm/"]
)
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    config = parse_config({"collector_url": url}, source=Path("agent.toml"))
    assert config.collector_url == url.rstrip("/")


BAD = [
    ({}, "collector_url", "is required"),
    ({"collector_url": "http://10.0.0.5"}, "collector_url", "plain http://"),
    ({"collector_url": "http://127.0.0.1.example.net"}, "collector_url", "plain http://"),
    ({"collector_url": "https://user:pw@noc"}, "collector_url", "credentials"),
    ({"collector_url": "https://noc?x=1"}, "collector_url", "query"),
    ({"collector_url": "noc.example.net"}, "collector_url", "https://"),
    ({"collector_url": 5}, "collector_url", "must be a string"),
    ({"enrollment_token": ""}, "enrollment_token", "must not be empty"),
    ({"kind": "desktop"}, "kind", "must be one of 'pc', 'server'"),
    ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "not a readable file"),
    ({"retry_max_s": 0}, "retry_max_s", "between 1 and 3600"),
    ({"retry_max_s": "soon"}, "retry_max_s", "must be a number"),
    ({"spool_max_events": 1.5}, "spool_max_events", "integer"),
    ({"proxy": "socks5://p:1080"}, "proxy", "http://"),
    ({"command_keys": "k1:abc"}, "command_keys", "list of strings"),
    ({"command_keys": ["no-colon"]}, "command_keys[0]", "<key_id>:<base64"),
    ({"command_keys": ["k1:!!!"]}, "command_keys[0]", "base64"),
    ({"command_keys": ["k1:AAAA"]}, "command_keys[0]", "32 bytes"),
    ({"command_keys": [PIN, PIN]}, "command_keys[1]", "listed twice"),
    ({"command_keys": [f"k1:{KEY}"]}, "command_keys[0]", "key id does not match"),
    ({"operator_keys": [f"{SMALL_ORDER_ID}:{SMALL_ORDER}"]}, "operator_keys[0]", "small order"),
    ({"offboard_approvals": -1}, "offboard_approvals", "between 0 and 16"),
    ({"offboard_approvals": 1.5}, "offboard_approvals", "integer"),
    (
        {"operator_keys": [ALICE, BOB], "offboard_approvals": 3},
        "offboard_approvals",
        "only 2 are pinned",
    ),
    ({"colector_url": "typo"}, "colector_url", "unknown setting"),
    ({"component": {"name": "x"}}, "component", "array of tables"),
    ({"component": [{"processes": ["a"]}]}, "component[0].name", "is required"),
    ({"component": [{"name": "rmm"}]}, "component[0].name", "the agent itself"),
    ({"component": [{"name": "bad name"}]}, "component[0].name", "letters, digits"),
    ({"component": [{"name": "a"}, {"name": "a"}]}, "component[1].name", "listed twice"),
    ({"component": [{"name": "a", "required": "yes"}]}, "component[0].required", "true or false"),
    ({"component": [{"name": "a", "processes": [1]}]}, "component[0].processes[0]", "string"),
    ({"component": [{"name": "a", "services": ["-x"]}]}, "component[0].services[0]", "'-'"),
    ({"component": [{"name": "a", "uninstall": ["rm"]}]}, "component[0].uninstall[0]", "program"),
    ({"component": [{"name": "a", "uninstall": [[]]}]}, "component[0].uninstall[0]", "non-empty"),
    ({"component": [{"name": "a", "procs": []}]}, "component[0].procs", "unknown setting"),
]


@pytest.mark.parametrize(("values", "key", "problem"), BAD)
def test_a_bad_setting_is_named_with_its_problem(
    values: dict[str, object], key: str, problem: str
) -> None:
    document = {"collector_url": "https://noc.example.net", **values}
    if "collector_url" not in values and key == "collector_url":
        del document["collector_url"]
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source=Path("/etc/rmm-agent/agent.toml"))
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"/etc/rmm-agent/agent.toml: {key}: ")


def test_a_file_that_is_not_toml_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "collector_url = \n"))


def test_a_missing_file_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_a_byte_order_mark_from_a_windows_editor_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'collector_url = "https://noc.example.net"\r\n')
    assert load_config(path).collector_url == "https://noc.example.net"


def test_without_operator_keys_every_offboard_is_refused_and_the_agent_says_so() -> None:
    config = parse_config({"collector_url": "https://noc"}, source=Path("/etc/agent.toml"))
    assert config.offboard_approvals == 2 and config.operator_keys == ()
    (warning,) = config.offboard_warnings()
    assert "every offboard will be refused" in warning


def test_single_signature_mode_must_be_written_out_and_is_warned_about() -> None:
    config = parse_config(
        {"collector_url": "https://noc", "offboard_approvals": 0}, source=Path("/etc/agent.toml")
    )
    assert config.offboard_approvals == 0
    (warning,) = config.offboard_warnings()
    assert "offboard_approvals = 0" in warning and "collector" in warning
