"""Telemetry events the agent owes the collector (`POST /v1/events`), stamped by the agent.

Types: `agent.started`, `agent.stopped`, `component.changed`, `probe.failed`. Each carries a unique
`event_id`, so a resend after a lost response is harmless.
"""

from __future__ import annotations

import uuid
from typing import Any

from wire.clock import Clock
from wire.messages import AgentEventMessage as Event
from wire.messages import EventsRequest, EventsResponse
from wire.times import format_instant

__all__ = ["MAX_EVENTS_PER_REQUEST", "Event", "EventsRequest", "EventsResponse", "new_event"]

MAX_EVENTS_PER_REQUEST = 500


def new_event(event_type: str, detail: dict[str, Any], *, clock: Clock) -> Event:
    return Event(
        event_id=uuid.uuid4().hex,
        at=format_instant(clock.now()),
        type=event_type,
        detail=detail,
    )
