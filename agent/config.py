"""The agent's TOML configuration, read once and validated; every error names the key at fault.

```toml
collector_url = "https://noc.example.net:8443"
enrollment_token = "<from rmm-collector client add>"
state_dir = "/var/lib/rmm-agent"
command_keys = ["<key_id>:<base64>"]
operator_keys = ["<key_id>:<base64>"]    # people whose signatures an offboard needs
offboard_approvals = 2                   # distinct pinned operator keys; 0 = collector key alone
ca_file = "/etc/rmm-agent/noc-ca.pem"
kind = "server"
[[component]]
name = "antivirus"
required = true
processes = ["MsMpEng.exe", "clamd"]
services = ["WinDefend", "clamav-daemon"]
uninstall = [["apt-get", "-y", "purge", "clamav-daemon"]]
```

Relative paths (`state_dir`, `ca_file`) are taken relative to the folder holding the config file.
Unknown keys are errors, so a typo never silently turns a setting off. A pinned key's id must be
its key's own id, and keys of small order or with a non-canonical encoding are refused.
`offboard_approvals` defaults to 2; with no `operator_keys` pinned every offboard is then refused,
unless the config says `offboard_approvals = 0` (the collector's signature alone; logged as a
warning at every start).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, cast
from urllib.parse import urlsplit

from wire.ed25519 import pin_problem

Kind = Literal["pc", "server"]
LogLevel = Literal["debug", "info", "warning", "error"]

DEFAULT_OFFBOARD_APPROVALS = 2
MAX_OFFBOARD_APPROVALS = 16

AGENT_COMPONENT = "rmm"
"""The agent reports itself under this component name; the catalogue may not reuse it."""

MAX_COMPONENTS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def default_config_path() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "rmm-agent" / "agent.toml"
    return Path("/etc/rmm-agent/agent.toml")


def default_state_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "rmm-agent" / "state"
    if sys.platform == "darwin":
        return Path("/Library/Application Support/rmm-agent")
    return Path("/var/lib/rmm-agent")


class ConfigError(Exception):
    """A configuration problem: `key` names the setting, `problem` says what is wrong with it."""

    def __init__(self, source: Path, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CommandKey:
    """A pinned command-signing public key (`<key_id>:<base64 raw Ed25519 key>`)."""

    key_id: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    name: str
    required: bool = True
    processes: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    uninstall: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class AgentConfig:
    source: Path
    collector_url: str
    state_dir: Path
    enrollment_token: str | None = field(default=None, repr=False)
    command_keys: tuple[CommandKey, ...] = ()
    operator_keys: tuple[CommandKey, ...] = ()
    offboard_approvals: int = DEFAULT_OFFBOARD_APPROVALS
    ca_file: Path | None = None
    kind: Kind | None = None
    components: tuple[ComponentSpec, ...] = ()
    proxy: str | None = None
    request_timeout_s: float = 30.0
    retry_max_s: float = 300.0
    spool_max_events: int = 10_000
    log_level: LogLevel = "info"
    uninstall_timeout_s: float = 600.0
    self_remove: tuple[str, ...] = ()
    enroll_retry_s: float = 240.0

    @property
    def key_ids(self) -> list[str]:
        return [key.key_id for key in self.command_keys]

    @property
    def operator_key_ids(self) -> list[str]:
        return [key.key_id for key in self.operator_keys]

    def offboard_warnings(self) -> list[str]:
        """What an operator should hear at every start about how offboards are approved."""
        if self.offboard_approvals == 0:
            return [
                f"{self.source}: offboard_approvals = 0: an offboard needs only the collector's "
                "signature, so whoever controls the collector can uninstall this machine's "
                "software; pin operator_keys and require 2 approvals"
            ]
        if len(self.operator_keys) < self.offboard_approvals:
            return [
                f"{self.source}: {len(self.operator_keys)} operator keys pinned but "
                f"offboard_approvals = {self.offboard_approvals}: every offboard will be "
                "refused until enough operator_keys are pinned"
            ]
        return []


def load_config(path: Path) -> AgentConfig:
    """Read and validate the config file; raises `ConfigError` naming the key and the problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "no such file") from None
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot be read: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig: editors on Windows may save UTF-8 with a byte-order mark.
        document = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(path, "(file)", "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(file)", f"is not valid TOML: {exc}") from None
    return parse_config(document, source=path)


def parse_config(document: dict[str, Any], *, source: Path) -> AgentConfig:
    reader = _Reader(document, source=source, prefix="")
    base = source.parent
    collector_url = _collector_url(reader, "collector_url")
    token = reader.optional_str("enrollment_token", max_length=512)
    state_dir = reader.optional_path("state_dir", base) or default_state_dir()
    command_keys = _command_keys(reader, "command_keys")
    operator_keys = _command_keys(reader, "operator_keys")
    explicit_approvals = reader.get("offboard_approvals") is not None
    offboard_approvals = int(
        reader.number(
            "offboard_approvals",
            DEFAULT_OFFBOARD_APPROVALS,
            low=0,
            high=MAX_OFFBOARD_APPROVALS,
            integer=True,
        )
    )
    if explicit_approvals and operator_keys and offboard_approvals > len(operator_keys):
        reader.fail(
            "offboard_approvals",
            f"{offboard_approvals} distinct operator keys are required but only "
            f"{len(operator_keys)} are pinned in operator_keys",
        )
    ca_file = reader.optional_path("ca_file", base)
    if ca_file is not None and not ca_file.is_file():
        reader.fail("ca_file", f"{str(ca_file)!r} is not a readable file")
    kind = reader.optional_choice("kind", ("pc", "server"))
    proxy = _proxy(reader, "proxy")
    request_timeout_s = reader.number("request_timeout_s", 30.0, low=1.0, high=300.0)
    retry_max_s = reader.number("retry_max_s", 300.0, low=1.0, high=3600.0)
    spool_max_events = int(
        reader.number("spool_max_events", 10_000, low=10, high=1_000_000, integer=True)
    )
    log_level = reader.optional_choice("log_level", ("debug", "info", "warning", "error")) or "info"
    uninstall_timeout_s = reader.number("uninstall_timeout_s", 600.0, low=1.0, high=7200.0)
    enroll_retry_s = reader.number("enroll_retry_s", 240.0, low=1.0, high=3600.0)
    self_remove = reader.str_list("self_remove", max_items=64, max_length=4096)
    if self_remove and not self_remove[0].strip():
        reader.fail("self_remove", "the program name must not be empty")
    components = _components(reader, "component")
    reader.reject_unknown()
    return AgentConfig(
        source=source,
        collector_url=collector_url,
        state_dir=state_dir,
        enrollment_token=token,
        command_keys=command_keys,
        operator_keys=operator_keys,
        offboard_approvals=offboard_approvals,
        ca_file=ca_file,
        kind=cast(Kind | None, kind),
        components=components,
        proxy=proxy,
        request_timeout_s=request_timeout_s,
        retry_max_s=retry_max_s,
        spool_max_events=spool_max_events,
        uninstall_timeout_s=uninstall_timeout_s,
        enroll_retry_s=enroll_retry_s,
        self_remove=self_remove,
        log_level=cast(LogLevel, log_level),
    )


class _Reader:
    """Takes keys out of one TOML table, remembering which were used so leftovers can be refused."""

    def __init__(self, table: dict[str, Any], *, source: Path, prefix: str) -> None:
        self._table = table
        self._source = source
        self._prefix = prefix
        self._used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(self._source, self.name(key), problem)

    def get(self, key: str) -> Any:
        self._used.add(key)
        return self._table.get(key)

    def reject_unknown(self) -> None:
        for key in self._table:
            if key not in self._used:
                self.fail(key, "unknown setting")

    def required_str(self, key: str, *, max_length: int) -> str:
        value = self.get(key)
        if value is None:
            self.fail(key, "is required")
        return self._str(key, value, max_length)

    def optional_str(self, key: str, *, max_length: int) -> str | None:
        value = self.get(key)
        return None if value is None else self._str(key, value, max_length)

    def _str(self, key: str, value: Any, max_length: int) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_type_name(value)}")
        text = value.strip()
        if not text:
            self.fail(key, "must not be empty")
        if len(text) > max_length:
            self.fail(key, f"is longer than {max_length} characters")
        return text

    def optional_path(self, key: str, base: Path) -> Path | None:
        text = self.optional_str(key, max_length=4096)
        if text is None:
            return None
        path = Path(text).expanduser()
        return path if path.is_absolute() else (base / path).absolute()

    def optional_choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        if value not in choices:
            self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
        return str(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_type_name(value)}")
        return bool(value)

    def number(
        self, key: str, default: float, *, low: float, high: float, integer: bool = False
    ) -> float:
        value = self.get(key)
        if value is None:
            return default
        allowed = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}")
        if not low <= value <= high:
            self.fail(key, f"must be between {low:g} and {high:g}, not {value}")
        return float(value)

    def str_list(self, key: str, *, max_items: int, max_length: int = 256) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(key, f"must be a list of strings, not {_type_name(value)}")
        if len(value) > max_items:
            self.fail(key, f"has more than {max_items} entries")
        items: list[str] = []
        for index, item in enumerate(value):
            items.append(self._str(f"{key}[{index}]", item, max_length))
        return tuple(items)


def _collector_url(reader: _Reader, key: str) -> str:
    url = reader.required_str(key, max_length=2048)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        reader.fail(key, f"must start with https:// (got {url!r})")
    if not parts.hostname:
        reader.fail(key, "has no host name")
    if parts.username is not None or parts.password is not None:
        reader.fail(key, "must not carry credentials; the agent authenticates with its token")
    if parts.query or parts.fragment:
        reader.fail(key, "must not have a query string or fragment")
    try:
        _ = parts.port
    except ValueError:
        reader.fail(key, "has an invalid port")
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        reader.fail(key, "plain http:// is refused except to this machine (loopback); use https://")
    return url.rstrip("/")


def _proxy(reader: _Reader, key: str) -> str | None:
    url = reader.optional_str(key, max_length=2048)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        reader.fail(key, "must be an http:// proxy URL (TLS to the collector runs through it)")
    return url


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _command_keys(reader: _Reader, key: str) -> tuple[CommandKey, ...]:
    entries = reader.str_list(key, max_items=16, max_length=512)
    keys: list[CommandKey] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = f"{key}[{index}]"
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            reader.fail(name, "must look like '<key_id>:<base64 public key>'")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            reader.fail(name, "the public key is not valid base64")
        if len(raw) != 32:
            reader.fail(name, f"the public key must be 32 bytes (Ed25519), not {len(raw)}")
        problem = pin_problem(key_id, raw)
        if problem is not None:
            reader.fail(name, problem)
        if key_id in seen:
            reader.fail(name, f"key id {key_id!r} is listed twice")
        seen.add(key_id)
        keys.append(CommandKey(key_id=key_id, public_key=raw))
    return tuple(keys)


def _components(reader: _Reader, key: str) -> tuple[ComponentSpec, ...]:
    value = reader.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        reader.fail(key, "must be an array of tables ([[component]])")
    if len(value) > MAX_COMPONENTS:
        reader.fail(key, f"has more than {MAX_COMPONENTS} entries")
    specs: list[ComponentSpec] = []
    names: set[str] = set()
    for index, table in enumerate(value):
        sub = _Reader(table, source=reader._source, prefix=f"{key}[{index}].")
        name = sub.required_str("name", max_length=64)
        if not _NAME.match(name):
            sub.fail("name", "use letters, digits, '_', '-' or '.' (at most 64)")
        if name == AGENT_COMPONENT:
            sub.fail("name", f"{AGENT_COMPONENT!r} is the agent itself and is always reported")
        if name in names:
            sub.fail("name", f"{name!r} is listed twice")
        names.add(name)
        required = sub.boolean("required", True)
        processes = sub.str_list("processes", max_items=32)
        services = sub.str_list("services", max_items=32)
        for index_s, service in enumerate(services):
            if service.startswith("-"):
                sub.fail(f"services[{index_s}]", "a service name cannot start with '-'")
        uninstall = _uninstall(sub, "uninstall")
        sub.reject_unknown()
        specs.append(ComponentSpec(name, required, processes, services, uninstall))
    return tuple(specs)


def _uninstall(reader: _Reader, key: str) -> tuple[tuple[str, ...], ...]:
    value = reader.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        reader.fail(key, 'must be a list of argv lists, e.g. [["apt-get", "purge", "x"]]')
    steps: list[tuple[str, ...]] = []
    for index, step in enumerate(value):
        name = f"{key}[{index}]"
        if not isinstance(step, list) or not step:
            reader.fail(name, "must be a non-empty list of strings (program and arguments)")
        if not all(isinstance(arg, str) for arg in step):
            reader.fail(name, "every argument must be a string")
        if not step[0].strip():
            reader.fail(name, "the program name must not be empty")
        steps.append(tuple(step))
    return tuple(steps)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
