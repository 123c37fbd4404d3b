"""Which devices exist, whose they are, and which vehicle they sit in.

Ingest asks this for every message, so answers are cached; a miss is cached
too (briefly) so a flood from an unknown id does not become a query flood.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    tenant_id: int
    vehicle_id: int | None
    enabled: bool
    filter_overrides: dict[str, float | int] | None = None


class DeviceRegistry:
    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 30.0, miss_ttl_s: float = 5.0) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._miss_ttl = miss_ttl_s
        self._cache: dict[str, tuple[float, DeviceInfo | None]] = {}

    async def get(self, device_id: str) -> DeviceInfo | None:
        now = time.monotonic()
        hit = self._cache.get(device_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool.fetchrow(
            """SELECT device_id, tenant_id, vehicle_id, enabled, filter_overrides
               FROM devices WHERE device_id = $1""",
            device_id,
        )
        info = DeviceInfo(**dict(row)) if row else None
        if len(self._cache) > 100_000:  # bound memory against id floods
            self._cache.clear()
        self._cache[device_id] = (now + (self._ttl if info else self._miss_ttl), info)
        return info

    def forget(self, device_id: str) -> None:
        self._cache.pop(device_id, None)
