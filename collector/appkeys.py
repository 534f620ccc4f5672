"""Typed keys for everything an app holds, so `request.app[STORE]` is typed."""

from __future__ import annotations

from aiohttp import web

from collector.auth import AgentTokenCache, FailedAuthLimiter
from collector.buffer import HeartbeatBuffer
from collector.commands import CommandSigner, OpenCommands
from collector.health import WriteHealth
from collector.metrics import Metrics
from collector.network_buffer import NetworkBuffer
from collector.pace import EnrollmentPace
from collector.settings import Settings
from collector.store.base import Store
from wire.clock import Clock

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
BUFFER = web.AppKey("buffer", HeartbeatBuffer)
AGENT_TOKENS = web.AppKey("agent_tokens", AgentTokenCache)
AUTH_LIMITER = web.AppKey("auth_limiter", FailedAuthLimiter)
OPEN_COMMANDS = web.AppKey("open_commands", OpenCommands)
SIGNER = web.AppKey("signer", CommandSigner)
HEALTH = web.AppKey("health", WriteHealth)
ENROLLMENT_PACE = web.AppKey("enrollment_pace", EnrollmentPace)
NETWORK = web.AppKey("network", NetworkBuffer)
