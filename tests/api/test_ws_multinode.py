"""Two API processes, both ingesting (the broker's shared subscription splits the
devices' messages between them), one Redis: a dashboard on either process sees every
vehicle move, whichever process ingested its fix.

(tests/cloud/test_multinode.py covers an API-only node fed by another's ingest.)"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets

from tests.harness import Broker, CloudStack, RedisServer

N = 6


@pytest.fixture
def two_ingesting_nodes(
    database: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[CloudStack, CloudStack]]:
    broker = Broker(tmp_path / "mosquitto").start()
    env = {
        "FLEET_REDIS_URL": redis_server.url,
        "FLEET_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "FLEET_JWT_SECRET": uuid.uuid4().hex * 2,
    }
    suffix = uuid.uuid4().hex[:6]
    a = CloudStack(broker, database, tmp_path, extra_env=env, tenant=f"mn-{suffix}",
                   email=f"mn-{suffix}@test.local").start()  # fmt: skip
    b = CloudStack(broker, database, tmp_path, extra_env=env, tenant=a.tenant, email=a.email,
                   password=a.password).start()  # fmt: skip
    yield a, b
    b.stop()
    a.stop()
    broker.stop()


def _stored(stack: CloudStack) -> float:
    with urllib.request.urlopen(stack.base_url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("fleet_ingest_stored_total "):
                return float(line.split()[1])
    raise AssertionError("fleet_ingest_stored_total not exported")


async def _watch(stack: CloudStack, ready: asyncio.Event, want: int) -> dict[int, float]:
    token = await asyncio.to_thread(stack.token)
    url = stack.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={token}"
    seen: dict[int, float] = {}
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        ready.set()
        async with asyncio.timeout(20):
            while len(seen) < want:
                frame = orjson.loads(await ws.recv())
                for v in frame.get("vehicles", []):
                    if v.get("lat") is not None and v["lat"] >= 53:  # the fixes sent below
                        seen[v["vehicle_id"]] = v["lat"]
    return seen


async def test_every_node_delivers_fixes_ingested_by_any_node(
    two_ingesting_nodes: tuple[CloudStack, CloudStack],
) -> None:
    a, b = two_ingesting_nodes
    devices = [f"mn-{uuid.uuid4().hex[:6]}-{i}" for i in range(N)]
    ids = [await asyncio.to_thread(a.register_vehicle, f"MN {d}", d) for d in devices]
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    watch_a = asyncio.create_task(_watch(a, ready_a, N))
    watch_b = asyncio.create_task(_watch(b, ready_b, N))
    await ready_a.wait()
    await ready_b.wait()
    t = int(time.time() * 1000) - 10_000
    for i, d in enumerate(devices):  # one message each: the shared subscription splits them
        fix = {"seq": 1, "t": t + i, "lat": 53.0 + i / 100, "lon": 13.0}
        await asyncio.to_thread(a.publish_fixes, d, [fix])
    want = {vid: pytest.approx(53.0 + i / 100) for i, vid in enumerate(ids)}
    assert await watch_a == want
    assert await watch_b == want
    # and each process did ingest a share: what the other's clients saw came through Redis
    assert await asyncio.to_thread(_stored, a) >= 1
    assert await asyncio.to_thread(_stored, b) >= 1
