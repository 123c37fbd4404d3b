"""Live state shared between cloud processes through Redis.

Each process publishes the states its own ingest produced and applies what
the others publish, so every API node's WebSocket clients see vehicles
ingested anywhere. Redis also holds the latest state per vehicle (a key with
a TTL, so a silent vehicle's entry ages out) and a GEO set per tenant for
"vehicles within R km" queries.

The live channel is published on every wake-up (one PUBLISH of the states
coalesced since the last one); the stored keys and GEO sets are written at most
every STORE_PERIOD_S. Writing them with every publish cost one SET and one
GEOADD per vehicle per batch: at 10,000 fixes/s that pipeline took ingest
~400 ms per batch, so the channel carried 2-3 batches/s and every WebSocket
client got 2-3 position frames/s instead of one per tick. What reads the keys
(priming a fresh API node, GEO queries) can be that much older.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from fleet_cloud.live import LiveState, VehicleState

log = logging.getLogger(__name__)

STATE_TTL_S = 7 * 86_400
STORE_PERIOD_S = 1.0


class RedisRelay:
    def __init__(self, live: LiveState, url: str, prefix: str = "fleet") -> None:
        self.live = live
        self.redis = aioredis.from_url(url)
        self.prefix = prefix
        self.channel = f"{prefix}:live"
        self.origin = uuid.uuid4().hex  # our own messages come back; skip them
        self._outbox: list[VehicleState] = []
        self._unstored: dict[int, VehicleState] = {}  # latest per vehicle, for the keys
        self._wake = asyncio.Event()
        self._pubsub: PubSub | None = None
        live.listen_local(self._on_local)

    def key(self, vehicle_id: int) -> str:
        return f"{self.prefix}:vehicle:{vehicle_id}"

    def geo_key(self, tenant_id: int) -> str:
        return f"{self.prefix}:geo:{tenant_id}"

    def _on_local(self, states: list[VehicleState]) -> None:
        # Called synchronously from ingest: queue, never block the live path.
        if len(self._outbox) < 100_000:
            self._outbox.extend(states)
            self._wake.set()

    async def start(self) -> None:
        """Subscribe before the node reports ready, so no update falls in between."""
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.channel)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publish_loop(), name="relay-publish")
            tg.create_task(self._store_loop(), name="relay-store")
            tg.create_task(self._subscribe_loop(), name="relay-subscribe")

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            latest = {s["vehicle_id"]: s for s in batch}  # coalesce per vehicle
            self._unstored.update(latest)
            try:
                msg = {"origin": self.origin, "states": list(latest.values())}
                await self.redis.publish(self.channel, orjson.dumps(msg))
            except (aioredis.RedisError, OSError) as e:
                log.warning("redis relay publish failed (%s); live updates stay local", e)
                await asyncio.sleep(1)

    async def _store_loop(self) -> None:
        while True:
            await asyncio.sleep(STORE_PERIOD_S)
            if self._unstored:
                await self.store_pending()

    async def store_pending(self) -> None:
        """Write the latest state of every vehicle changed since the last write."""
        states, self._unstored = self._unstored, {}
        geo: dict[int, list[Any]] = {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            for s in states.values():
                pipe.set(self.key(s["vehicle_id"]), orjson.dumps(s), ex=STATE_TTL_S)
                if s.get("lat") is not None:
                    geo.setdefault(s["tenant_id"], []).extend((s["lon"], s["lat"], s["vehicle_id"]))
            for tenant_id, members in geo.items():  # one GEOADD per tenant
                pipe.geoadd(self.geo_key(tenant_id), members)
            await pipe.execute()
        except (aioredis.RedisError, OSError) as e:
            log.warning("redis relay store failed (%s); retrying with the next write", e)
            for vid, s in states.items():  # newer states queued meanwhile win
                self._unstored.setdefault(vid, s)

    async def _subscribe_loop(self) -> None:
        while True:
            try:
                if self._pubsub is None:
                    await self.start()
                assert self._pubsub is not None
                async for m in self._pubsub.listen():
                    if m.get("type") == "message":
                        self._apply(m["data"])
            except (aioredis.RedisError, OSError) as e:
                log.warning("redis relay subscription lost (%s); retrying", e)
                with contextlib.suppress(Exception):
                    if self._pubsub is not None:
                        await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(1)

    def _apply(self, data: bytes) -> None:
        try:
            msg: dict[str, Any] = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if msg.get("origin") != self.origin:
            self.live.merge(msg.get("states", []))

    async def load_all(self) -> list[VehicleState]:
        """Every state Redis holds (used to prime a fresh API node)."""
        states = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}:vehicle:*", count=1000):
            raw = await self.redis.get(key)
            if raw:
                states.append(orjson.loads(raw))
        return states

    async def within(self, tenant_id: int, lat: float, lon: float, radius_km: float) -> list[int]:
        ids = await self.redis.geosearch(
            self.geo_key(tenant_id), longitude=lon, latitude=lat, radius=radius_km, unit="km"
        )
        return [int(cast(bytes, i)) for i in ids]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._unstored:  # the last second's states, for the next node to start
                await self.store_pending()
            await self.redis.aclose()
