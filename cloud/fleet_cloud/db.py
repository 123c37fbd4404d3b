"""Connection pool with the codecs the cloud relies on."""

from __future__ import annotations

import asyncpg
import orjson


async def _init(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects, via orjson (the hot path writes engine values).
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(dsn: str, size: int = 8) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=_init)
    assert pool is not None
    return pool
