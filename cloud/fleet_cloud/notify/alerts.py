"""Alerts to WebSocket clients, from whichever process ran processing.

Processing queues each notifiable event with ``pg_notify('fleet_events', ...)``
in the transaction that stored it, so PostgreSQL delivers it at commit (never
for a rolled-back event) to every API node listening; each node hands the
frame to its WebSocket hub. No Redis needed for this path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from fleet_cloud.processing.writes import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

Push = Callable[[int, dict[str, Any]], None]


async def listen_alerts(dsn: str, push: Push, ready: asyncio.Event | None = None) -> None:
    """Forward alert frames to push(tenant_id, frame) until cancelled; reconnects."""

    def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            frame = orjson.loads(payload)
            tenant_id = int(frame.pop("tenant_id"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("bad alert notification dropped")
            return
        push(tenant_id, frame)

    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn)
            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
            if ready is not None:
                ready.set()
            while not conn.is_closed():
                await asyncio.sleep(5)
                await conn.execute("SELECT 1")  # notice a dead connection
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("alert listener: %s; reconnecting", e)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        await asyncio.sleep(2)
