"""Several cloud processes behind one broker: live updates reach every API node via Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets

from tests.harness import Broker, CloudStack, RedisServer

T0 = int(time.time() * 1000) - 30_000


@pytest.fixture
def two_nodes(
    database: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[CloudStack, CloudStack]]:
    # An own broker, so no other test's ingest worker joins this shared subscription.
    broker = Broker(tmp_path / "mosquitto").start()
    shared = {
        "FLEET_REDIS_URL": redis_server.url,
        "FLEET_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "FLEET_JWT_SECRET": uuid.uuid4().hex * 2,
    }
    a = CloudStack(
        broker, database, tmp_path, extra_env=shared, tenant="multi", email="multi@test.local"
    ).start()
    b = CloudStack(
        broker, database, tmp_path, extra_env=shared, tenant="multi",
        email=a.email, password=a.password, serve_args=["--no-ingest"],
    ).start()  # fmt: skip
    yield a, b
    b.stop()
    a.stop()
    broker.stop()


async def test_api_node_without_ingest_pushes_updates_ingested_elsewhere(
    two_nodes: tuple[CloudStack, CloudStack],
) -> None:
    a, b = two_nodes
    ids = [
        await asyncio.to_thread(a.register_vehicle, f"Multi {i}", f"multi-{i}") for i in range(5)
    ]
    token = await asyncio.to_thread(b.token)
    url = b.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={token}"
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        seen: dict[int, float] = {}
        for i in range(5):  # ingested by node a only: b runs --no-ingest
            fix = {"seq": 1, "t": T0 + i, "lat": 52.0 + i / 100, "lon": 13.0}
            await asyncio.to_thread(a.publish_fixes, f"multi-{i}", [fix])
        async with asyncio.timeout(15):
            while set(ids) - set(seen):
                frame = orjson.loads(await ws.recv())
                for v in frame.get("vehicles", []):
                    if v.get("lat") is not None:
                        seen[v["vehicle_id"]] = v["lat"]
        assert [seen[v] for v in ids] == pytest.approx([52.0, 52.01, 52.02, 52.03, 52.04])


def test_a_stopped_ingest_worker_keeps_no_share_of_the_traffic(
    database: str, tmp_path: Path
) -> None:
    """Mosquitto queues a share of a shared subscription for offline persistent
    sessions; a worker that stops cleanly must end its session, or half of the
    devices' messages would wait in a queue nobody reads."""
    broker = Broker(tmp_path / "mosquitto").start()
    try:
        old = CloudStack(broker, database, tmp_path, tenant="share", email="share@test.local")
        old.start()
        old.stop()
        new = CloudStack(
            broker, database, tmp_path, tenant="share", email="share@test.local",
            password=old.password,
        ).start()  # fmt: skip
        try:
            for i in range(6):  # each publish once, no resend: all must land on the live worker
                new.register_vehicle(f"Share {i}", f"share-{i}")
                new.publish_fixes(f"share-{i}", [{"seq": 1, "t": T0 + i, "lat": 52.0, "lon": 13.0}])
        finally:
            new.stop()
    finally:
        broker.stop()
