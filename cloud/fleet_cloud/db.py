"""Connection pool with the codecs the cloud relies on."""

from __future__ import annotations

import asyncpg
import orjson


def _jsonb_encode(value: object) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _jsonb_decode(data: bytes) -> object:
    return orjson.loads(data[1:])  # past the version byte


# jsonb's binary wire form is a version byte (1) and the JSON text.
_JSONB_VERSION = b"\x01"


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python objects, via orjson, in the binary format: the
    hot path writes engine values with a binary COPY, which has no text codecs."""
    await conn.set_type_codec(
        "jsonb",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        schema="pg_catalog",
        format="binary",
    )


async def create_pool(dsn: str, size: int = 8) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=init_connection)
    assert pool is not None
    return pool
