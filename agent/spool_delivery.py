"""Delivering the spool: events and command results the collector has not acknowledged yet,
sent in the order they were written, across restarts of the agent."""

from __future__ import annotations

import asyncio
import logging

from agent.client import CollectorClient, CollectorUnavailable, Rejected, Unauthorized
from agent.events import MAX_EVENTS_PER_REQUEST, Event
from agent.spool import Spool, SpoolItem

log = logging.getLogger("agent.service")


async def deliver_spool(spool: Spool, client: CollectorClient) -> int:
    """Send what is spooled, oldest first (events in batches); stop at the first item the
    collector cannot take now. Returns how many items it acknowledged."""
    delivered = 0
    while True:
        items = await asyncio.to_thread(spool.pending, 4 * MAX_EVENTS_PER_REQUEST)
        if not items:
            return delivered
        index = 0
        while index < len(items):
            item = items[index]
            if item.kind == "event":
                batch = _event_batch(items, index)
                ok = await _send_events(spool, client, batch)
                index += len(batch)
            else:
                batch = [item]
                ok = await _send_result(spool, client, item)
                index += 1
            if not ok:
                return delivered
            delivered += len(batch)


async def _send_events(spool: Spool, client: CollectorClient, batch: list[SpoolItem]) -> bool:
    events: list[Event] = [item.event() for item in batch]
    try:
        await client.send_events(events)
    except CollectorUnavailable as exc:
        log.warning("could not deliver %d spooled events (%s); kept for later", len(batch), exc)
        return False
    except Unauthorized:
        return False
    except Rejected as exc:
        log.error("collector refused %d spooled events and they were dropped: %s", len(batch), exc)
    await asyncio.to_thread(spool.acknowledge, batch)
    return True


async def _send_result(spool: Spool, client: CollectorClient, item: SpoolItem) -> bool:
    result = item.result()
    try:
        await client.send_result(result.command_id, bytes(result.body))
    except CollectorUnavailable as exc:
        log.warning("could not deliver the result of command %s (%s)", result.command_id, exc)
        return False
    except Unauthorized:
        return False
    except Rejected as exc:
        log.error(
            "collector refused the result of command %s (%s); set aside in the spool",
            result.command_id,
            exc,
        )
        await asyncio.to_thread(spool.set_aside, item)
        return True
    await asyncio.to_thread(spool.acknowledge, [item])
    return True


def _event_batch(items: list[SpoolItem], start: int) -> list[SpoolItem]:
    batch: list[SpoolItem] = []
    for item in items[start:]:
        if item.kind != "event" or len(batch) == MAX_EVENTS_PER_REQUEST:
            break
        batch.append(item)
    return batch
