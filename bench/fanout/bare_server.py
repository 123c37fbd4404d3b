"""The raw limit for bench/fanout: a bare uvicorn/Starlette WebSocket server that sends
every client a frame of the same shape and size as the hub's, at the same tick.

    python bench/fanout/bare_server.py --port P --tick-ms 1000 --vehicles 100

No auth, no database, no per-client coalescing: one frame is serialised per tick and
the same text goes to every client (each client has its own sender task, as in the
hub). What our hub delivers is compared with what this delivers in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


class Ticker:
    def __init__(self, tick_s: float, vehicles: int) -> None:
        self.tick_s = tick_s
        self.vehicles = vehicles
        self.frame = ""
        self.changed = asyncio.Condition()

    def build(self) -> str:
        now = int(time.time() * 1000)
        states = [
            {"vehicle_id": i, "t": now, "lat": 52.5 + i * 1e-5, "lon": 13.4, "spd": 42.0,
             "hdg": 90.0, "online": True, "recv": now}
            for i in range(self.vehicles)
        ]  # fmt: skip
        return orjson.dumps({"type": "positions", "vehicles": states}).decode()

    async def run(self) -> None:
        while True:
            self.frame = self.build()
            async with self.changed:
                self.changed.notify_all()
            await asyncio.sleep(self.tick_s)


def make_app(tick_s: float, vehicles: int) -> Starlette:
    ticker = Ticker(tick_s, vehicles)

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()  # the subscribe message, as the hub reads it

        async def sender() -> None:
            while True:
                async with ticker.changed:
                    await ticker.changed.wait()
                await ws.send_text(ticker.frame)

        task = asyncio.create_task(sender())
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        t = asyncio.create_task(ticker.run())
        yield
        t.cancel()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument("--vehicles", type=int, default=100)
    args = ap.parse_args()
    uvicorn.run(
        make_app(args.tick_ms / 1000, args.vehicles),
        host="127.0.0.1", port=args.port, log_level="warning",
    )  # fmt: skip


if __name__ == "__main__":
    main()
