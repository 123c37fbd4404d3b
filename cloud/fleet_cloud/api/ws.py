"""WebSocket hub: live vehicle states pushed to the dashboards that asked for them.

Each client has one dict of pending states keyed by vehicle: a new state
replaces the older one, and a sender task flushes the dict once per tick. A
slow client therefore gets the latest state of each vehicle, never a growing
queue, and a client's memory is bounded by the number of vehicles it sees.

Cost per update is that of the clients that want it, not of all clients: the
hub indexes clients by vehicle (and by tenant for "all"), and each state is
encoded to JSON once, then joined into every frame that carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from fleet_cloud.api.auth import Principal, authenticate
from fleet_cloud.api.errors import ApiError
from fleet_cloud.api.events import READERS as ALERT_READERS
from fleet_cloud.live import LiveState, VehicleState
from fleet_cloud.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter()

MAX_FRAME_IN = 16 * 1024  # a subscribe message is small; anything larger is hostile
MAX_IDS_PER_SUBSCRIBE = 10_000


# A client that went away: the send fails with one of these (uvicorn raises
# ClientDisconnected where Starlette does not translate it).
GONE = (WebSocketDisconnect, ClientDisconnected)


def _public(state: VehicleState) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "tenant_id"}


class WsClient:
    frames_sent = 0  # every client of this process (the /metrics counter)

    def __init__(self, ws: WebSocket, who: Principal, tick_s: float) -> None:
        self.ws = ws
        self.who = who
        self.tick_s = tick_s
        self.all = False
        self.vehicles: set[int] = set()
        self.pending: dict[int, str] = {}  # vehicle -> its public state, JSON-encoded
        # Alert frames from processing (bounded: a stuck client loses the oldest).
        self.alerts: deque[str] = deque(maxlen=100)  # JSON-encoded
        self.wake = asyncio.Event()

    def wants(self, state: VehicleState) -> bool:
        if state["tenant_id"] != self.who.tenant_id:
            return False
        return self.all or state["vehicle_id"] in self.vehicles

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_text(orjson.dumps(frame).decode())

    async def send_text(self, text: str) -> None:
        await self.ws.send_text(text)
        WsClient.frames_sent += 1

    async def sender(self) -> None:
        """Flush alerts and coalesced positions once per tick; ends when the client is gone."""
        with contextlib.suppress(*GONE):
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.alerts:
                    await self.send_text(self.alerts.popleft())
                batch, self.pending = self.pending, {}
                if batch:
                    await self.send_text(
                        '{"type":"positions","vehicles":[' + ",".join(batch.values()) + "]}"
                    )
                await asyncio.sleep(self.tick_s)


def _id_list(v: object) -> bool:
    return (
        isinstance(v, list)
        and len(v) <= MAX_IDS_PER_SUBSCRIBE
        and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
    )


class Hub:
    def __init__(self, live: LiveState, settings: Settings, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.live = live
        self.settings = settings
        self.clients: set[WsClient] = set()
        self._by_vehicle: dict[int, set[WsClient]] = {}
        self._all_of_tenant: dict[int, set[WsClient]] = {}
        live.listen(self._on_states)

    @property
    def frames_sent(self) -> int:
        return WsClient.frames_sent

    def watch(self, c: WsClient, vehicles: set[int]) -> None:
        c.vehicles.update(vehicles)
        for v in vehicles:
            self._by_vehicle.setdefault(v, set()).add(c)

    def unwatch(self, c: WsClient, vehicles: set[int]) -> None:
        c.vehicles.difference_update(vehicles)
        for v in vehicles:
            watchers = self._by_vehicle.get(v)
            if watchers is not None:
                watchers.discard(c)
                if not watchers:
                    del self._by_vehicle[v]

    def watch_all(self, c: WsClient, on: bool) -> None:
        c.all = on
        if on:
            self._all_of_tenant.setdefault(c.who.tenant_id, set()).add(c)
        else:
            self._all_of_tenant.get(c.who.tenant_id, set()).discard(c)

    def remove(self, c: WsClient) -> None:
        self.clients.discard(c)
        self.unwatch(c, set(c.vehicles))
        self.watch_all(c, False)

    def _on_states(self, states: list[VehicleState]) -> None:
        for s in states:
            vid, tenant = s["vehicle_id"], s["tenant_id"]
            by_id = self._by_vehicle.get(vid, ())
            by_all = self._all_of_tenant.get(tenant, ())
            if not (by_id or by_all):
                continue
            text = orjson.dumps(_public(s)).decode()  # once, for every client that wants it
            for group in (by_id, by_all):
                for c in group:
                    if c.who.tenant_id == tenant:
                        c.pending[vid] = text
                        c.wake.set()

    def push_alert(self, tenant_id: int, frame: dict[str, Any]) -> None:
        """An {"type": "alert", ...} frame to every client of that tenant whose
        role may read alerts (GET /alerts): not installers."""
        text = orjson.dumps(frame).decode()  # once, not per client
        for c in self.clients:
            if c.who.tenant_id == tenant_id and c.who.role in ALERT_READERS:
                c.alerts.append(text)
                c.wake.set()


def _origin_allowed(ws: WebSocket, settings: Settings) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser: the token alone decides
    if origin in settings.allowed_origins:
        return True
    return urlsplit(origin).netloc == ws.headers.get("host")


@router.websocket("/api/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    app = ws.app
    hub: Hub = app.state.hub
    settings: Settings = app.state.settings
    if not _origin_allowed(ws, settings):
        await ws.close(code=1008, reason="origin not allowed")
        return
    try:
        who = await authenticate(settings, hub.pool, ws.query_params.get("token", ""))
    except ApiError:
        await ws.close(code=1008, reason="invalid or expired token")
        return
    await ws.accept()
    client = WsClient(ws, who, settings.ws_tick_ms / 1000)
    hub.clients.add(client)
    sender = asyncio.create_task(client.sender(), name="ws-sender")
    expiry = asyncio.create_task(_close_at_expiry(ws, who.exp), name="ws-expiry")
    try:
        while True:
            text = await ws.receive_text()
            await _on_message(client, hub, text)
    except GONE:
        pass  # a client that leaves (or drops) is the normal end of a session
    finally:
        hub.remove(client)
        sender.cancel()
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        with contextlib.suppress(asyncio.CancelledError):
            await expiry


async def _close_at_expiry(ws: WebSocket, exp: int | None) -> None:
    """The token is re-checked when it expires: the connection ends there (1008).

    API keys (exp None) last until deleted. A client reconnects with a fresh token.
    """
    if exp is None:
        return
    await asyncio.sleep(max(0.0, exp - time.time()))
    with contextlib.suppress(RuntimeError):  # already closing
        await ws.close(code=1008, reason="token expired")


async def _on_message(client: WsClient, hub: Hub, text: str) -> None:
    if len(text) > MAX_FRAME_IN:
        await client.send({"type": "error", "code": "too_large", "message": "frame too large"})
        return
    try:
        msg = orjson.loads(text)
        kind = msg["type"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        await client.send(
            {"type": "error", "code": "bad_frame", "message": "expected JSON with 'type'"}
        )
        return
    if kind not in ("subscribe", "unsubscribe"):
        await client.send(
            {"type": "error", "code": "bad_type", "message": f"unknown type {str(kind)[:40]!r}"}
        )
        return
    ids, fleets = msg.get("vehicles", []), msg.get("fleets", [])
    if not (_id_list(ids) and _id_list(fleets)):
        await client.send(
            {"type": "error", "code": "bad_ids", "message": "vehicles/fleets must be lists of ids"}
        )
        return
    # Only ids of the caller's tenant count; others are "not found", as in the REST API.
    rows = await hub.pool.fetch(
        """SELECT id FROM vehicles
           WHERE tenant_id = $1 AND (id = ANY($2::bigint[]) OR fleet_id = ANY($3::bigint[]))""",
        client.who.tenant_id,
        ids,
        fleets,
    )
    found = {r["id"] for r in rows}
    if kind == "unsubscribe":
        if msg.get("all"):
            hub.watch_all(client, False)
        hub.unwatch(client, found)
        return
    if msg.get("all"):
        hub.watch_all(client, True)
    hub.watch(client, found)
    missing = [i for i in ids if i not in found]
    if missing:
        await client.send(
            {"type": "error", "code": "not_found", "message": f"vehicles not found: {missing[:20]}"}
        )
    snapshot = [_public(s) for s in hub.live.for_tenant(client.who.tenant_id) if client.wants(s)]
    await client.send({"type": "snapshot", "vehicles": snapshot})
