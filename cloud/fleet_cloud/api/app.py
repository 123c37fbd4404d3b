"""The cloud application: REST API, WebSocket hub, dashboard, and (by default) ingest.

One process can run everything for a small fleet (``fleet-cloud serve``);
larger set-ups run ingest workers separately (``fleet-cloud ingest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fleet_cloud import maintenance
from fleet_cloud.api import auth_routes, errors, events, ingest_http, routes, vehicle_engine, ws
from fleet_cloud.api.devices_admin import router as devices_admin_router
from fleet_cloud.api.exports import router as exports_router
from fleet_cloud.api.metrics import instrument as instrument_metrics
from fleet_cloud.api.metrics import router as metrics_router
from fleet_cloud.api.provisioning import router as provisioning_router
from fleet_cloud.api.remote_config import router as remote_config_router
from fleet_cloud.api.resources import router as resources_router
from fleet_cloud.api.summaries import router as summaries_router
from fleet_cloud.db import create_pool
from fleet_cloud.ingest.consumer import IngestWorker
from fleet_cloud.live import LiveState, VehicleState
from fleet_cloud.processing import runtime as processing_runtime
from fleet_cloud.registry import DeviceRegistry
from fleet_cloud.relay import RedisRelay
from fleet_cloud.remote_config.service import RemoteConfigService
from fleet_cloud.settings import Settings
from fleet_cloud.store import dt_to_ms

log = logging.getLogger(__name__)

_LATEST_STATES = """
SELECT v.id AS vehicle_id, v.tenant_id, p.fix_time, p.lat, p.lon, p.speed, p.heading,
       p.recv_time, ds.online
FROM vehicles v
LEFT JOIN devices d ON d.vehicle_id = v.id
LEFT JOIN device_status ds ON ds.device_id = d.device_id
JOIN LATERAL (
    SELECT fix_time, lat, lon, speed, heading, recv_time FROM positions
    WHERE vehicle_id = v.id AND filter_reason IS NULL
    ORDER BY fix_time DESC LIMIT 1
) p ON true
"""


def create_app(settings: Settings, run_ingest: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, settings.db_pool_size)
        live = LiveState()
        # After a restart the map shows each vehicle's last stored fix at once.
        live.prime(_state_from_row(r) for r in await pool.fetch(_LATEST_STATES))
        relay = (
            RedisRelay(live, settings.redis_url, settings.redis_prefix)
            if settings.redis_url
            else None
        )
        if relay is not None:
            await relay.start()
            live.merge(await relay.load_all())
        app.state.pool = pool
        app.state.live = live
        app.state.hub = ws.Hub(live, settings, pool)
        registry = DeviceRegistry(pool)
        workers = (
            [
                IngestWorker(settings, pool, registry, live, i)
                for i in range(settings.ingest_workers)
            ]
            if run_ingest
            else []
        )
        app.state.ingest_workers = workers
        app.state.registry = registry
        tasks = [asyncio.create_task(w.run(), name=w.client_id) for w in workers]
        # HTTP ingest shares a worker's batches; an API-only node gets a writer of its own.
        if workers:
            app.state.http_ingest = workers[0]
        else:
            app.state.http_ingest = IngestWorker(settings, pool, registry, live, 0)
            tasks.append(asyncio.create_task(app.state.http_ingest.run_flush_only()))
        if relay is not None:
            tasks.append(asyncio.create_task(relay.run(), name="redis-relay"))
        tasks.append(asyncio.create_task(maintenance.run(pool, settings), name="maintenance"))
        # Desired configs and commands out to the broker, rollouts advanced (remote_config/).
        app.state.remote_config = RemoteConfigService(settings, pool)
        tasks.append(asyncio.create_task(app.state.remote_config.run(), name="remote-config"))
        # Geofences/events/trips (one owner per database, advisory lock) and alerts to the hub.
        app.state.processor, proc_tasks = processing_runtime.start(
            settings.database_url, pool, app.state.hub.push_alert
        )
        tasks.extend(proc_tasks)
        try:
            yield
        finally:
            for w in workers:  # what was received is written and acked while connected
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.drain(), timeout=5)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await pool.close()
            if relay is not None:
                await relay.close()

    app = FastAPI(
        title="Fleet telemetry API",
        version="1",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(auth_routes.router)
    app.include_router(routes.router)
    app.include_router(ingest_http.router)
    app.include_router(events.router)
    app.include_router(vehicle_engine.router)
    app.include_router(provisioning_router)
    app.include_router(remote_config_router)
    app.include_router(devices_admin_router)
    # after routes.router: its /vehicles/near must match before /vehicles/{vehicle_id}
    app.include_router(resources_router)
    app.include_router(exports_router)
    app.include_router(summaries_router)
    app.include_router(metrics_router)
    instrument_metrics(app)
    app.include_router(ws.router)
    static = resources.files("fleet_cloud") / "static"
    app.mount("/", StaticFiles(directory=str(static), html=True), name="dashboard")
    return app


def _state_from_row(row: Mapping[str, Any]) -> VehicleState:
    return {
        "vehicle_id": row["vehicle_id"],
        "tenant_id": row["tenant_id"],
        "t": dt_to_ms(row["fix_time"]),
        "lat": row["lat"],
        "lon": row["lon"],
        "spd": row["speed"],
        "hdg": row["heading"],
        "online": row["online"],
        "recv": dt_to_ms(row["recv_time"]),
    }
