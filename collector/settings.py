"""Every collector setting, declared once: name, default, help, and its `RMM_COLLECTOR_*` variable.

The command line, the environment and the tests all build a `Settings` from this one table.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_DB = "data/collector.sqlite3"
ENV_PREFIX = "RMM_COLLECTOR_"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Settings:
    db: str = DEFAULT_DB
    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_interval_s: int = 60
    flush_interval_s: float = 1.0
    sweep_interval_s: float = 60.0
    history_retention_days: int = 400
    compaction_interval_s: float = 86400.0
    auth_cache_s: float = 10.0
    enrollment_token_ttl_days: int = 30
    enrollment_alert_per_hour: int = 50
    enrollment_rate_per_minute: int = 0
    offboard_requests_per_hour: int = 20
    events_per_hour: int = 600
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0
    max_connections_per_address: int = 2048
    command_ttl_s: int = 600
    command_poll_s: float = 2.0
    keys_dir: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    trusted_proxies: str = ""
    access_log: bool = False
    log_level: str = "INFO"
    web_token_signin: bool = False
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: str = ""
    oidc_redirect_url: str = ""
    oidc_group_claim: str = "groups"
    oidc_name_claim: str = "preferred_username"
    oidc_roles: str = ""

    @property
    def online_window_s(self) -> int:
        """A machine is online while seen within three heartbeat intervals."""
        return 3 * self.heartbeat_interval_s

    @property
    def is_postgres(self) -> bool:
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def resolved_keys_dir(self) -> Path:
        """An absolute path, the same whichever engine: the folder given, else `keys/` beside
        the state's own folder (the SQLite file's, or `data/` for a PostgreSQL URL, the folder
        the default SQLite file lives in)."""
        if self.keys_dir:
            return Path(self.keys_dir).resolve()
        state = Path(DEFAULT_DB) if self.is_postgres else Path(self.db)
        return state.resolve().parent / "keys"


_HELP: dict[str, str] = {
    "db": "SQLite file path or postgresql:// URL of the collector's state",
    "host": "address to listen on",
    "port": "TCP port to listen on",
    "heartbeat_interval_s": "seconds between agent heartbeats (each agent gets a small jitter)",
    "flush_interval_s": "seconds between flushes of buffered last-seen times to the database",
    "sweep_interval_s": "seconds between sweeps that record machines expiring after 30 days",
    "history_retention_days": "days of presence history kept exact: older runs of presence, "
    "facts and coverage periods that no answer inside this horizon reads are dropped",
    "compaction_interval_s": "seconds between compactions of history older than the horizon",
    "auth_cache_s": "seconds an agent token lookup is cached (revocations take effect within this)",
    "enrollment_token_ttl_days": "days a new enrollment token stays valid",
    "enrollment_alert_per_hour": "audit and count an alert when one enrollment token enrolls "
    "more machines than this within an hour",
    "enrollment_rate_per_minute": "refuse (429) enrollments beyond this many per minute and "
    "enrollment token; 0 = no limit (a mass roll-out enrolls hundreds a minute)",
    "header_timeout_s": "seconds a connection has to send a request's headers (slow clients "
    "are cut off)",
    "body_timeout_s": "seconds a request's body has to arrive once its headers are in",
    "idle_timeout_s": "seconds a kept-alive connection may wait before its next request",
    "max_connections_per_address": "open connections allowed from one address (trusted "
    "proxies exempt; each agent keeps one open, so size it above the largest client site "
    "behind one NAT address); 0 = no cap",
    "events_per_hour": "events one agent may send in an hour; more are refused (429) and "
    "dropped by the agent",
    "offboard_requests_per_hour": "refuse (429) single-machine offboard requests beyond this "
    "many an hour, whoever asks; bulk orders of a whole client are not counted; 0 = no limit",
    "command_ttl_s": "seconds a signed command stays valid after delivery (at most 900)",
    "command_poll_s": "seconds between checks for commands requested through other instances",
    "keys_dir": "folder of command-signing keys and the web pages' session secret, shared by "
    "every instance (default: keys/ beside the SQLite file; with PostgreSQL, data/keys under "
    "the working directory)",
    "tls_cert": "PEM certificate chain: serve HTTPS instead of HTTP",
    "tls_key": "PEM private key for --tls-cert",
    "trusted_proxies": "comma-separated addresses or networks of reverse proxies whose "
    "X-Forwarded-For names the client and whose X-Forwarded-Proto says it used HTTPS (Secure "
    "cookies, HSTS) (e.g. 127.0.0.1 for nginx on this host)",
    "access_log": "log every request (off by default: it costs throughput)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "web_token_signin": "break-glass: also let the pages be signed in to with an API token "
    "(no second factor); off by default, audited at every start and every such sign-in",
    "oidc_issuer": "OpenID Connect issuer URL (e.g. "
    "https://login.microsoftonline.com/TENANT/v2.0); empty = no single sign-on",
    "oidc_client_id": "the collector's client id at the identity provider",
    "oidc_client_secret_file": "file holding the client secret (mode 0600)",
    "oidc_redirect_url": "this collector's callback as the identity provider knows it, "
    "https://HOST/signin/oidc/callback",
    "oidc_group_claim": "ID token claim listing the person's groups",
    "oidc_name_claim": "ID token claim naming the person (shown and audited)",
    "oidc_roles": "comma-separated GROUP=ROLE pairs; a person in none of these groups is refused "
    "(e.g. noc-admins=admin,techs=technician)",
}


def parse_networks(text: str) -> tuple[Network, ...]:
    """`"127.0.0.1, 10.0.0.0/8, ::1"` as networks; a ValueError names an entry that is neither an
    address nor a network."""
    networks = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network") from exc
    return tuple(networks)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _converter(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _parse_bool
    return type(default)


class SettingsError(ValueError):
    pass


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Values found in `RMM_COLLECTOR_*` variables, converted to each setting's type."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = environ.get(env_name(field.name))
        if raw is None:
            continue
        try:
            values[field.name] = _converter(field.default)(raw)
        except ValueError as exc:
            raise SettingsError(f"{env_name(field.name)}: {exc}") from exc
    return values


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add one `--flag` per setting; the help shows the variable and the default."""
    for field in fields(Settings):
        if only is not None and field.name not in only:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{_HELP[field.name]} (env {env_name(field.name)}; default {field.default!r})"
        if isinstance(field.default, bool):
            parser.add_argument(
                flag,
                dest=field.name,
                default=None,
                help=help_text,
                action=argparse.BooleanOptionalAction,
            )
        else:
            parser.add_argument(
                flag, dest=field.name, default=None, help=help_text, type=_converter(field.default)
            )


def load(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, overridden by the environment, overridden by flags given on the command line."""
    values = from_environment(environ)
    if args is not None:
        for field in fields(Settings):
            given = getattr(args, field.name, None)
            if given is not None:
                values[field.name] = given
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    if settings.heartbeat_interval_s < 1:
        raise SettingsError("heartbeat_interval_s must be at least 1")
    if settings.flush_interval_s <= 0 or settings.flush_interval_s > 10:
        raise SettingsError("flush_interval_s must be in (0, 10] so last-seen never lags far")
    if settings.history_retention_days < 60:
        raise SettingsError(
            "history_retention_days must be at least 60: longer than the 30-day expiry window"
        )
    if settings.compaction_interval_s < 1:
        raise SettingsError("compaction_interval_s must be at least 1 second")
    if not 0.05 <= settings.auth_cache_s <= 300:
        raise SettingsError("auth_cache_s must be between 0.05 and 300 seconds")
    if not 0.05 <= settings.command_poll_s <= 300:
        raise SettingsError("command_poll_s must be between 0.05 and 300 seconds")
    if settings.sweep_interval_s < 0.05:
        raise SettingsError("sweep_interval_s must be at least 0.05 seconds")
    if not 60 <= settings.command_ttl_s <= 900:
        raise SettingsError("command_ttl_s must be between 60 and 900: minutes, not days")
    if settings.enrollment_alert_per_hour < 1:
        raise SettingsError("enrollment_alert_per_hour must be at least 1")
    for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
        if not 0.1 <= getattr(settings, name) <= 3600:
            raise SettingsError(f"{name} must be between 0.1 and 3600 seconds")
    if settings.max_connections_per_address < 0:
        raise SettingsError("max_connections_per_address must be 0 (no cap) or more")
    if settings.events_per_hour < 1:
        raise SettingsError("events_per_hour must be at least 1")
    if settings.offboard_requests_per_hour < 0:
        raise SettingsError("offboard_requests_per_hour must be 0 (no limit) or more")
    if settings.enrollment_rate_per_minute < 0:
        raise SettingsError("enrollment_rate_per_minute must be 0 (no limit) or more")
    if settings.enrollment_token_ttl_days < 1:
        raise SettingsError("enrollment_token_ttl_days must be at least 1")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("tls_cert and tls_key go together")
    try:
        parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"trusted_proxies: {exc}") from exc
    if settings.oidc_issuer:
        missing = [
            name
            for name in ("oidc_client_id", "oidc_client_secret_file", "oidc_redirect_url")
            if not getattr(settings, name)
        ]
        if missing:
            raise SettingsError(f"oidc_issuer needs {', '.join(missing)} too")
        try:
            from collector.oidc import parse_roles

            parse_roles(settings.oidc_roles)
        except ValueError as exc:
            raise SettingsError(f"oidc_roles: {exc}") from exc
    if not 0 < settings.port < 65536:
        raise SettingsError("port must be between 1 and 65535")
