"""A dashboard that loses its connection and comes back resumes cleanly: the snapshot
on its new subscription is the latest state (what happened while it was away
included), live frames follow from there, nothing older arrives after it, and the
server forgot the dropped connection."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from typing import Any

import orjson
import websockets

from tests.api.conftest import ingest
from tests.auth.conftest import AuthCloud
from tests.harness import wait_until


def _fix(seq: int, t0: int) -> dict[str, object]:
    return {"seq": seq, "t": t0 + seq * 1000, "lat": 52.5 + seq / 1000, "lon": 13.4}


async def _next_of(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == kind:
                return dict(frame)


def _ws_clients(base_url: str) -> float:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("fleet_ws_clients "):
                return float(line.split()[1])
    raise AssertionError("fleet_ws_clients not exported")


async def test_a_reconnecting_client_resumes_from_the_latest_state(auth_cloud: AuthCloud) -> None:
    device = "resume-" + uuid.uuid4().hex[:8]
    vid = await asyncio.to_thread(auth_cloud.stack.register_vehicle, f"Resume {device}", device)
    t0 = int(time.time() * 1000) - 120_000
    await asyncio.to_thread(ingest, auth_cloud, device, [_fix(1, t0)])
    url = auth_cloud.base_url.replace("http://", "ws://") + "/api/v1/ws?token="
    sub = orjson.dumps({"type": "subscribe", "vehicles": [vid]}).decode()
    before = await asyncio.to_thread(_ws_clients, auth_cloud.base_url)

    first = await websockets.connect(url + await asyncio.to_thread(auth_cloud.token, "viewer"))
    await first.send(sub)
    snap = await _next_of(first, "snapshot")
    assert [v["lat"] for v in snap["vehicles"]] == [_fix(1, t0)["lat"]]
    # the link dies without a close handshake (a train tunnel, not a logout)
    assert first.transport is not None
    first.transport.abort()
    await asyncio.to_thread(ingest, auth_cloud, device, [_fix(2, t0), _fix(3, t0)])

    token = await asyncio.to_thread(auth_cloud.token, "viewer")  # a fresh token, as the UI does
    async with websockets.connect(url + token) as again:
        await again.send(sub)
        snap = await _next_of(again, "snapshot")
        assert [(v["vehicle_id"], v["lat"]) for v in snap["vehicles"]] == [
            (vid, _fix(3, t0)["lat"])
        ]
        await asyncio.to_thread(ingest, auth_cloud, device, [_fix(4, t0)])
        frame = await _next_of(again, "positions")
        # live from the snapshot on: the next frame is the new fix, never an older one
        assert [v["lat"] for v in frame["vehicles"] if v["vehicle_id"] == vid] == [
            _fix(4, t0)["lat"]
        ]
        # the dropped connection is gone from the hub; the new one counts
        await asyncio.to_thread(
            wait_until,
            lambda: _ws_clients(auth_cloud.base_url) == before + 1,
            15,
            "the hub to drop the aborted connection",
            0.2,
        )
