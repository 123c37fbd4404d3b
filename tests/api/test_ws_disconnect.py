"""Dashboards that go away while frames are due (a logout, a closed tab, a dropped
link) end their session quietly: no "Exception in ASGI application" traceback in the
API log, and the hub forgets them.

The race is made to happen rather than hoped for: each client has a position frame
pending when the API process is stopped (SIGSTOP); the clients then close or drop
their connections, and when the process resumes, each sender's tick and the
client's departure arrive together."""

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

from tests.harness import Broker, CloudStack, wait_until

N = 12
TICK_MS = 2000


@pytest.fixture
def slow_tick_stack(database: str, tmp_path: Path) -> Iterator[CloudStack]:
    broker = Broker(tmp_path / "mosquitto").start()
    suffix = uuid.uuid4().hex[:6]
    stack = CloudStack(broker, database, tmp_path, tenant=f"wsgone-{suffix}",
                       email=f"wsgone-{suffix}@test.local",
                       extra_env={"FLEET_WS_TICK_MS": str(TICK_MS)})  # fmt: skip
    try:
        yield stack.start()
    finally:
        stack.stop()
        broker.stop()


def _ws_clients(base_url: str) -> float:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("fleet_ws_clients "):
                return float(line.split()[1])
    raise AssertionError("fleet_ws_clients not exported")


async def _next_of(ws: websockets.ClientConnection, kind: str) -> dict[str, object]:
    async with asyncio.timeout(15):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == kind:
                return dict(frame)


def _fix(seq: int) -> dict[str, object]:
    return {"seq": seq, "t": int(time.time() * 1000), "lat": 52.5 + seq / 1000, "lon": 13.4}


async def test_clients_leaving_with_a_frame_due_end_without_a_traceback(
    slow_tick_stack: CloudStack,
) -> None:
    stack = slow_tick_stack
    assert stack.proc is not None
    device = "gone-" + uuid.uuid4().hex[:8]
    vid = await asyncio.to_thread(stack.register_vehicle, f"Gone {device}", device)
    url = stack.base_url.replace("http://", "ws://") + "/api/v1/ws?token="
    token = await asyncio.to_thread(stack.token)
    conns = [await websockets.connect(url + token) for _ in range(N)]
    for ws in conns:
        await ws.send(orjson.dumps({"type": "subscribe", "vehicles": [vid]}).decode())
        await _next_of(ws, "snapshot")

    await asyncio.to_thread(stack.publish_fixes, device, [_fix(1)])
    for ws in conns:  # sent at once; each sender now waits out its tick
        await _next_of(ws, "positions")
    sent_at = time.monotonic()
    await asyncio.to_thread(stack.publish_fixes, device, [_fix(2)])  # returns once stored
    assert time.monotonic() - sent_at < TICK_MS / 1000, "fix 2 must still be pending"

    log_before = len(stack.proc.log())
    stack.proc.pause()
    try:
        closing = []
        for i, ws in enumerate(conns):
            if i % 2:
                assert ws.transport is not None
                ws.transport.abort()  # the link drops
            else:
                closing.append(asyncio.create_task(ws.close()))  # a logout
        await asyncio.sleep(max(0.0, sent_at + TICK_MS / 1000 + 0.3 - time.monotonic()))
    finally:
        stack.proc.resume()
    await asyncio.gather(*closing)

    await asyncio.to_thread(
        wait_until, lambda: _ws_clients(stack.base_url) == 0, 15, "the hub to forget them", 0.2
    )
    tail = stack.proc.log()[log_before:]
    assert "Traceback" not in tail, tail[-3000:]
