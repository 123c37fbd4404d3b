"""Unsubscribing stops a vehicle's updates on that connection, whether it was
subscribed by id or through "all", and leaves the other subscriptions running."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import websockets

from tests.api.conftest import ingest
from tests.auth.conftest import AuthCloud


def _fix(seq: int) -> dict[str, object]:
    return {"seq": seq, "t": int(time.time() * 1000), "lat": 52.5 + seq / 1000, "lon": 13.4}


async def _frame_with(ws: websockets.ClientConnection, vid: int) -> list[dict[str, Any]]:
    """Position frames up to and including the first that carries vid."""
    frames = []
    async with asyncio.timeout(15):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] != "positions":
                continue
            frames.append(frame)
            if any(v["vehicle_id"] == vid for v in frame["vehicles"]):
                return frames


def _ids(frames: list[dict[str, Any]]) -> set[int]:
    return {v["vehicle_id"] for f in frames for v in f["vehicles"]}


async def _send(ws: websockets.ClientConnection, msg: dict[str, object], then: int) -> None:
    """Send msg, then subscribe to vehicle `then` and wait for that snapshot: the
    server handles a connection's messages in order, so msg is in effect."""
    await ws.send(orjson.dumps(msg).decode())
    await ws.send(orjson.dumps({"type": "subscribe", "vehicles": [then]}).decode())
    snapshots = 2 if msg["type"] == "subscribe" else 1  # the last is the sync point
    async with asyncio.timeout(15):
        while snapshots:
            if orjson.loads(await ws.recv())["type"] == "snapshot":
                snapshots -= 1


async def test_unsubscribe_by_id_and_from_all(auth_cloud: AuthCloud) -> None:
    stack = auth_cloud.stack
    dev_a, dev_b = ("unsub-" + uuid.uuid4().hex[:8] for _ in range(2))
    a = await asyncio.to_thread(stack.register_vehicle, f"Unsub {dev_a}", dev_a)
    b = await asyncio.to_thread(stack.register_vehicle, f"Unsub {dev_b}", dev_b)
    token = await asyncio.to_thread(auth_cloud.token, "viewer")
    url = auth_cloud.base_url.replace("http://", "ws://") + "/api/v1/ws?token=" + token
    async with websockets.connect(url) as ws:
        await _send(ws, {"type": "subscribe", "vehicles": [a, b]}, a)
        await _send(ws, {"type": "unsubscribe", "vehicles": [b]}, a)
        # b moves first, then a: a's frame arrives, b's update never does
        await asyncio.to_thread(ingest, auth_cloud, dev_b, [_fix(1)])
        await asyncio.to_thread(ingest, auth_cloud, dev_a, [_fix(1)])
        assert b not in _ids(await _frame_with(ws, a))

        await _send(ws, {"type": "subscribe", "all": True}, a)
        await asyncio.to_thread(ingest, auth_cloud, dev_b, [_fix(2)])
        assert b in _ids(await _frame_with(ws, b))  # through "all"

        await _send(ws, {"type": "unsubscribe", "all": True}, a)
        await asyncio.to_thread(ingest, auth_cloud, dev_b, [_fix(3)])
        await asyncio.to_thread(ingest, auth_cloud, dev_a, [_fix(2)])
        assert b not in _ids(await _frame_with(ws, a))  # a stays subscribed by id
