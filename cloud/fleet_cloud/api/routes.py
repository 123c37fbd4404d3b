"""REST resources of the slice: login, UI config, vehicles with live state, position history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, Principal, issue_token, verify_password
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError
from fleet_cloud.live import LiveState
from fleet_cloud.store import dt_to_ms

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

MAX_HISTORY = timedelta(days=31)
MAX_POSITIONS = 100_000


class LoginRequest(BaseModel):
    email: Annotated[str, Field(min_length=3, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class UserOut(BaseModel):
    email: str
    role: str
    tenant_id: int


class LoginResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    user: UserOut


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


@router.post("/auth/login", response_model=LoginResponse, tags=["auth"])
async def login(body: LoginRequest, request: Request) -> LoginResponse:
    row = await _pool(request).fetchrow(
        "SELECT id, tenant_id, email, password_hash, role FROM users WHERE email = $1",
        body.email.lower(),
    )
    if not verify_password(row["password_hash"] if row else None, body.password) or row is None:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    p = Principal(row["id"], row["tenant_id"], row["email"], row["role"])
    settings = request.app.state.settings
    return LoginResponse(
        access_token=issue_token(settings, p),
        expires_in=settings.jwt_ttl_s,
        user=UserOut(email=p.email, role=p.role, tenant_id=p.tenant_id),
    )


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


@router.get("/vehicles/{vehicle_id}/positions", response_model=PositionsOut, tags=["vehicles"])
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
) -> PositionsOut:
    pool = _pool(request)
    owner = await pool.fetchval("SELECT tenant_id FROM vehicles WHERE id = $1", vehicle_id)
    if owner != user.tenant_id:  # another tenant's vehicle does not exist for you
        raise ApiError(404, "not_found", f"vehicle {vehicle_id} not found")
    end = _utc(to) if to else datetime.now(UTC)
    start = _utc(from_) if from_ else end - timedelta(hours=24)
    if start > end:
        raise ApiError(422, "invalid_request", "from must be before to", "from")
    if end - start > MAX_HISTORY:
        raise ApiError(
            422, "range_too_long", f"at most {MAX_HISTORY.days} days per request", "from"
        )
    rows = await pool.fetch(
        """SELECT fix_time, lat, lon, speed, heading, altitude, sats, hdop, filter_reason
           FROM positions
           WHERE vehicle_id = $1 AND fix_time >= $2 AND fix_time < $3
             AND ($5 OR filter_reason IS NULL)
           ORDER BY fix_time LIMIT $4""",
        vehicle_id,
        start,
        end,
        limit,
        include_filtered,
    )
    return PositionsOut(
        vehicle_id=vehicle_id,
        positions=[
            PositionOut(
                t=dt_to_ms(r["fix_time"]),
                lat=r["lat"],
                lon=r["lon"],
                spd=r["speed"],
                hdg=r["heading"],
                alt=r["altitude"],
                sat=r["sats"],
                hdop=r["hdop"],
                filtered=r["filter_reason"],
            )
            for r in rows
        ],
    )


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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
