"""Background upkeep of the cloud process: statistics rollup and retention.

Every API process runs this loop; advisory locks make one of them do each job.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from fleet_cloud import retention, rollup
from fleet_cloud.settings import Settings

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 6 * 3600


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    next_retention = time.monotonic() + 60  # not in the middle of start-up
    while True:
        try:
            async with pool.acquire() as conn:
                await rollup.refresh(conn)
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY_S
                    n = await retention.apply(conn, settings.retention_days)
                    if n:
                        log.info(
                            "retention: %d rows older than %d days deleted",
                            n,
                            settings.retention_days,
                        )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning(
                "maintenance skipped (%s); next try in %.0fs", e, settings.rollup_interval_s
            )
        await asyncio.sleep(settings.rollup_interval_s)
