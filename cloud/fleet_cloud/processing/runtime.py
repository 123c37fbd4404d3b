"""Processing's long-lived tasks, as ``fleet-cloud serve`` and ``fleet-cloud process`` run them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from fleet_cloud.notify.alerts import listen_alerts
from fleet_cloud.notify.email import EmailDispatcher
from fleet_cloud.notify.webhooks import WebhookDispatcher
from fleet_cloud.processing.config import ProcessingSettings
from fleet_cloud.processing.service import Processor


def start(
    dsn: str,
    pool: asyncpg.Pool,
    push_alert: Callable[[int, dict[str, Any]], None] | None,
    cfg: ProcessingSettings | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[Processor | None, list[asyncio.Task[None]]]:
    """Start the processor (it waits for the advisory lock: one owner per database),
    the webhook and email dispatchers (safe on every node), and, on API nodes, the alert
    listener that feeds the WebSocket hub."""
    cfg = cfg or ProcessingSettings()
    tasks: list[asyncio.Task[None]] = []
    proc = None
    if push_alert is not None:
        tasks.append(asyncio.create_task(listen_alerts(dsn, push_alert), name="alert-listener"))
    if cfg.enabled:
        proc = Processor(pool, cfg)
        tasks.append(asyncio.create_task(proc.run(stop), name="processing"))
        tasks.append(asyncio.create_task(WebhookDispatcher(pool, cfg).run(stop), name="webhooks"))
        if cfg.smtp_host:
            tasks.append(asyncio.create_task(EmailDispatcher(pool, cfg).run(stop), name="email"))
    return proc, tasks
