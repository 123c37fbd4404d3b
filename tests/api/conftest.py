"""The API tests reuse the two-tenant cloud of tests/auth (users of every role in
tenant A, an owner in tenant B, a known JWT key)."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson

from tests.auth.conftest import AuthCloud, auth_cloud

__all__ = ["auth_cloud", "ingest"]


def ingest(ac: AuthCloud, device: str, fixes: list[dict[str, object]], boot: int = 1) -> None:
    """Store fixes through the real HTTP ingest (answers after the commit)."""
    token = asyncio.run(_device_token(ac.stack.dsn, device))
    req = urllib.request.Request(
        ac.base_url + "/api/v1/ingest",
        data=orjson.dumps({"v": 1, "boot": boot, "fixes": fixes}),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        doc = orjson.loads(r.read())
    assert not doc["rejected"] and not doc["filtered"], doc


async def _device_token(dsn: str, device: str) -> str:
    import asyncpg

    from fleet_cloud import device_tokens

    conn = await asyncpg.connect(dsn)
    try:
        return await device_tokens.issue(conn, device)
    finally:
        await conn.close()
