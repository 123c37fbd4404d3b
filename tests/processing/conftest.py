"""Processing tests run against their own fresh, migrated database.

Their own, because the processing stage follows *every* stored position: the
session ``cloud`` (which runs processing too) must not consume the positions
these tests insert directly, and vice versa.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from fleet_cloud import directory
from fleet_cloud.db import create_pool
from fleet_cloud.processing.config import ProcessingSettings
from fleet_cloud.processing.service import Processor
from fleet_cloud.store import PositionRows, write_batch
from fleet_wire import Fix
from tests.harness import migrated_database

_names = itertools.count(1)


@pytest.fixture(scope="session")
def proc_dsn() -> Iterator[str]:
    with migrated_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def pool(proc_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(proc_dsn, 4)
    yield p
    await p.close()


@pytest.fixture
def processor(pool: asyncpg.Pool) -> Processor:
    return Processor(
        pool, ProcessingSettings(hole_grace_s=0.0, notify_max_age_s=1e12, late_settle_s=0.0)
    )


async def new_vehicle(pool: asyncpg.Pool, tenant: str | None = None) -> tuple[int, int, str]:
    """(tenant_id, vehicle_id, device_id) of a fresh vehicle (fresh tenant unless named)."""
    n = next(_names)
    async with pool.acquire() as conn:
        tid = await directory.ensure_tenant(conn, tenant or f"proc-tenant-{n}")
        fid = await directory.ensure_fleet(conn, tid, "Fleet")
        device = f"proc-dev-{n:04d}"
        vid = await directory.ensure_vehicle_with_device(conn, tid, fid, f"Vehicle {n}", device)
    return tid, vid, device


async def store(
    pool: asyncpg.Pool, device_id: str, vehicle_id: int, fixes: list[dict[str, Any]], boot: int = 1
) -> int:
    """Store fixes through the ingest's own batch writer; return how many were new."""
    cols = PositionRows()
    now = datetime.now(UTC)
    for f in fixes:
        cols.add(device_id, boot, Fix.model_validate(f), now, vehicle_id)
    async with pool.acquire() as conn:
        return await write_batch(conn, cols, [], [])


async def drain(proc: Processor) -> None:
    while await proc.step():
        pass


async def events_of(
    pool: asyncpg.Pool, vehicle_id: int, with_retracted: bool = False
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT * FROM events WHERE vehicle_id = $1 AND ($2 OR retracted_at IS NULL)
           ORDER BY fix_time, type, rule_key""",
        vehicle_id,
        with_retracted,
    )
    return [dict(r) for r in rows]


async def eventually(pred: Callable[[], Any], what: str, within_s: float = 30.0) -> None:
    """Poll pred (sync or async) until it is true; generous timeouts, no timing claims."""
    try:
        async with asyncio.timeout(within_s):
            while True:
                r = pred()
                if inspect.isawaitable(r):
                    r = await r
                if r:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"timed out after {within_s}s waiting for {what}") from None
