"""Device tokens for HTTP ingest: issued once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

PREFIX = "fdt_"  # recognisable in logs and secret scanners


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue(conn: asyncpg.Connection, device_id: str) -> str:
    """A new token for the device; the only time it is ever shown."""
    token = PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO device_tokens (device_id, token_sha256) VALUES ($1, $2)",
        device_id,
        _digest(token),
    )
    return token


async def device_for(pool: asyncpg.Pool, token: str) -> str | None:
    """The device a valid, unrevoked token belongs to."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
    device: str | None = await pool.fetchval(
        """SELECT t.device_id FROM device_tokens t JOIN devices d USING (device_id)
           WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND d.enabled""",
        _digest(token),
    )
    return device


async def revoke_all(conn: asyncpg.Connection, device_id: str) -> int:
    result = await conn.execute(
        "UPDATE device_tokens SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL",
        device_id,
    )
    return int(result.rsplit(" ", 1)[1])
