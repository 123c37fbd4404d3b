"""REST resources of the slice: UI config, vehicles with live state, position history.

Login and the other auth endpoints are in auth_routes.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser
from fleet_cloud.api.errors import ERROR_RESPONSES
from fleet_cloud.api.scoping import own_vehicle, time_range
from fleet_cloud.live import LiveState
from fleet_cloud.processing.geo import haversine_m

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

MAX_HISTORY = timedelta(days=31)
MAX_POSITIONS = 100_000


class UiConfig(BaseModel):
    tiles_url: str
    tiles_attribution: str
    center: tuple[float, float]
    zoom: int


class VehicleState(BaseModel):
    t: int | None = Field(None, description="fix time, UTC ms")
    lat: float | None = None
    lon: float | None = None
    spd: float | None = Field(None, description="km/h")
    hdg: float | None = Field(None, description="degrees")
    online: bool | None = None
    recv: int | None = Field(None, description="time the cloud received the fix, UTC ms")


class VehicleOut(BaseModel):
    id: int
    name: str
    device_id: str | None
    fleet_id: int | None
    state: VehicleState | None


class PositionOut(BaseModel):
    t: int
    lat: float
    lon: float
    spd: float | None = None
    hdg: float | None = None
    alt: float | None = None
    sat: int | None = None
    hdop: float | None = None
    filtered: str | None = Field(
        None, description="plausibility filter reason (only with include_filtered=true)"
    )


class PositionsOut(BaseModel):
    vehicle_id: int
    positions: list[PositionOut]


class Health(BaseModel):
    status: str
    database: str
    broker: str


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


@router.get("/ui-config", response_model=UiConfig, tags=["dashboard"])
async def ui_config(request: Request) -> UiConfig:
    s = request.app.state.settings
    return UiConfig(
        tiles_url=s.tiles_url,
        tiles_attribution=s.tiles_attribution,
        center=s.map_center,
        zoom=s.map_zoom,
    )


def _state_out(state: dict[str, Any] | None) -> VehicleState | None:
    if state is None:
        return None
    return VehicleState(**{k: state.get(k) for k in VehicleState.model_fields})


@router.get("/vehicles", response_model=list[VehicleOut], tags=["vehicles"])
async def list_vehicles(user: CurrentUser, request: Request) -> list[VehicleOut]:
    live: LiveState = request.app.state.live
    rows = await _pool(request).fetch(
        """SELECT v.id, v.name, v.fleet_id, d.device_id
           FROM vehicles v LEFT JOIN devices d ON d.vehicle_id = v.id
           WHERE v.tenant_id = $1 ORDER BY v.name""",
        user.tenant_id,
    )
    return [
        VehicleOut(
            id=r["id"],
            name=r["name"],
            device_id=r["device_id"],
            fleet_id=r["fleet_id"],
            state=_state_out(live.get(r["id"])),
        )
        for r in rows
    ]


# Rows are picked in SQL. With max_points the range is cut into equal time
# buckets and the first fix of each bucket is kept (plus the last fix of the
# range), so a long range stays a light, faithful polyline.
# speed, heading, altitude and hdop are stored as real (float4): fetched as
# they are, 40.3 reaches the rows shape's JSON as 40.29999923706055. Rounding
# in float8 to the precision devices send prints them as sent (and smaller).
_FIELDS = """(date_part('epoch', fix_time) * 1000)::int8 AS t, lat, lon,
       round(speed::float8 * 10) / 10 AS spd, round(heading::float8 * 10) / 10 AS hdg,
       round(altitude::float8 * 10) / 10 AS alt, sats AS sat,
       round(hdop::float8 * 100) / 100 AS hdop, filter_reason AS filtered"""
_RANGE = """FROM positions
    WHERE vehicle_id = $1 AND fix_time >= $2 AND fix_time < $3
      AND ($5 OR filter_reason IS NULL)"""
_HISTORY = f"SELECT {_FIELDS} {_RANGE} ORDER BY fix_time LIMIT $4"
_HISTORY_DOWNSAMPLED = f"""
SELECT {_FIELDS} FROM (
    (SELECT DISTINCT ON (floor(date_part('epoch', fix_time - $2) / $6)) * {_RANGE}
     ORDER BY floor(date_part('epoch', fix_time - $2) / $6), fix_time)
    UNION
    (SELECT * {_RANGE} ORDER BY fix_time DESC LIMIT 1)
) d ORDER BY fix_time LIMIT $4"""


def _as_columns(query: str) -> str:
    """The same rows as one JSON document of arrays, built by PostgreSQL itself.

    A vehicle-day at 1 Hz is 86,400 fixes: too many to turn into Python
    objects on every request. (Fetching the arrays in binary and writing the
    JSON with orjson measured no faster end to end, and larger: bench/history.)
    """
    return f"""
    SELECT json_build_object(
        'vehicle_id', $1::int8,
        't', coalesce(array_agg(t), '{{}}'), 'lat', coalesce(array_agg(lat), '{{}}'),
        'lon', coalesce(array_agg(lon), '{{}}'), 'spd', coalesce(array_agg(spd), '{{}}'),
        'hdg', coalesce(array_agg(hdg), '{{}}'))::text
    FROM ({query}) h"""


class PositionColumnsOut(BaseModel):
    """format=columns: one array per field, index i of each is fix i (fix-time order)."""

    vehicle_id: int
    t: list[int]
    lat: list[float]
    lon: list[float]
    spd: list[float | None]
    hdg: list[float | None]


@router.get(
    "/vehicles/{vehicle_id}/positions",
    response_model=PositionsOut | PositionColumnsOut,
    tags=["vehicles"],
    summary="Position history of one vehicle, in fix-time order",
)
async def vehicle_positions(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    from_: Annotated[
        datetime | None, Query(alias="from", description="ISO-8601; default: to - 24 h")
    ] = None,
    to: Annotated[datetime | None, Query(description="ISO-8601; default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POSITIONS)] = 10_000,
    include_filtered: Annotated[
        bool, Query(description="also return fixes a plausibility filter flagged, with the reason")
    ] = False,
    max_points: Annotated[
        int | None,
        Query(ge=2, le=MAX_POSITIONS, description="downsample: at most about this many fixes"),
    ] = None,
    format: Annotated[
        Literal["rows", "columns"],
        Query(description="rows: one object per fix; columns: one array per field (compact)"),
    ] = "rows",
) -> Any:
    pool = _pool(request)
    await own_vehicle(pool, vehicle_id, user)
    start, end = time_range(from_, to, timedelta(hours=24), MAX_HISTORY)
    args: tuple[Any, ...] = (vehicle_id, start, end, limit, include_filtered)
    query = _HISTORY
    if max_points:
        query = _HISTORY_DOWNSAMPLED
        args = (*args, (end - start).total_seconds() / max_points)
    if format == "columns":
        body = await pool.fetchval(_as_columns(query), *args)
        return Response(body, media_type="application/json")
    rows = await pool.fetch(query, *args)
    return Response(
        orjson.dumps({"vehicle_id": vehicle_id, "positions": [dict(r) for r in rows]}),
        media_type="application/json",
    )


class StatsOut(BaseModel):
    bucket: datetime = Field(description="start of the hour or day (UTC)")
    fixes: int
    distance_km: float
    max_speed_kmh: float | None
    avg_speed_kmh: float | None
    moving_s: float = Field(description="seconds moving (speed > 3 km/h)")
    idle_s: float = Field(description="seconds with ignition on and speed <= 3 km/h")


@router.get(
    "/vehicles/{vehicle_id}/stats",
    response_model=list[StatsOut],
    tags=["vehicles"],
    summary="Hourly or daily statistics (distance, speeds, moving and idle time)",
)
async def vehicle_stats(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    period: Annotated[Literal["hour", "day"], Query()] = "day",
    from_: Annotated[
        datetime | None, Query(alias="from", description="default: to - 31 days")
    ] = None,
    to: Annotated[datetime | None, Query(description="default: now")] = None,
) -> list[StatsOut]:
    pool = _pool(request)
    await own_vehicle(pool, vehicle_id, user)
    start, end = time_range(from_, to, timedelta(days=31))
    table = "vehicle_stats_hourly" if period == "hour" else "vehicle_stats_daily"
    rows = await pool.fetch(
        f"""SELECT bucket, fixes, distance_km, max_speed_kmh, avg_speed_kmh, moving_s, idle_s
            FROM {table} WHERE vehicle_id = $1 AND bucket >= $2 AND bucket < $3
            ORDER BY bucket""",
        vehicle_id,
        start,
        end,
    )
    return [StatsOut(**dict(r)) for r in rows]


class NearbyOut(BaseModel):
    vehicle_id: int
    distance_km: float
    state: VehicleState


@router.get(
    "/vehicles/near",
    response_model=list[NearbyOut],
    tags=["vehicles"],
    summary="Vehicles whose latest position is within radius_km of a point, nearest first",
)
async def vehicles_near(
    user: CurrentUser,
    request: Request,
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
    radius_km: Annotated[float, Query(gt=0, le=1000)] = 5.0,
) -> list[NearbyOut]:
    # Every API node's live state holds the whole fleet (the Redis relay fills
    # it), so a scan here answers the same as Redis' GEO set, without a round trip.
    live: LiveState = request.app.state.live
    found = []
    for s in live.for_tenant(user.tenant_id):
        if s.get("lat") is None or s.get("lon") is None:
            continue
        d_km = haversine_m(lat, lon, s["lat"], s["lon"]) / 1000
        state = _state_out(s)
        if d_km <= radius_km and state is not None:
            found.append(
                NearbyOut(vehicle_id=s["vehicle_id"], distance_km=round(d_km, 3), state=state)
            )
    return sorted(found, key=lambda n: n.distance_km)


@router.get("/health", response_model=Health, tags=["ops"])
async def health(request: Request) -> Health:
    try:
        await _pool(request).fetchval("SELECT 1")
        db = "ok"
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        db = f"down: {e}"[:200]
    workers = request.app.state.ingest_workers
    broker = "ok" if all(w.connected for w in workers) else "down"
    if not workers:
        broker = "not used (no in-process ingest)"
    ok = db == "ok" and broker != "down"
    return Health(status="ok" if ok else "degraded", database=db, broker=broker)
