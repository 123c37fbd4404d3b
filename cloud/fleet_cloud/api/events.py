"""REST resources of processing: geofences (GeoJSON), events/alerts (+ acknowledge),
trips, stops, rules and webhooks. Every query is scoped to the caller's tenant."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from pydantic import AnyHttpUrl, BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, Principal, require_role
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from fleet_cloud.api.scoping import own_vehicle, time_range, utc
from fleet_cloud.processing.geofences import KINDS, GeofenceError, validate
from fleet_cloud.processing.rules import DEFAULTS, RULE_NAMES, SEVERITIES, TRIP_DEFAULTS, RuleSet
from fleet_cloud.store import dt_to_ms

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

EDITORS = ("owner", "manager")
ACKERS = ("owner", "manager", "dispatcher")  # acknowledge alerts, plan and settle routes
# Everyone but installers: they see vehicles and positions (routes.py), what fitting a
# device needs, not the tenant's events, trips or set-up.
READERS = ("owner", "manager", "dispatcher", "viewer")
Severity = Literal["info", "warning", "critical"]
MAX_RANGE = timedelta(days=92)
_KIND_OF = {"Point": "circle", "Polygon": "polygon", "LineString": "corridor"}


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _require(user: Principal, roles: tuple[str, ...]) -> None:
    """For a check inside a handler; routes declare theirs with require_role."""
    if user.role not in roles:
        raise ApiError(403, "forbidden", f"role {user.role!r} may not do this")


# -- geofences -----------------------------------------------------------------


class ActiveHours(BaseModel):
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default=[0, 1, 2, 3, 4, 5, 6], description="0 = Monday"
    )
    start: str = Field("00:00", description="HH:MM, local time")
    end: str = Field("24:00", description="HH:MM; before start means overnight")
    tz: str = "UTC"


class GeofenceProps(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["circle", "polygon", "corridor"] | None = Field(
        None, description="default: from the geometry (Point, Polygon, LineString)"
    )
    radius_m: float | None = Field(None, description="circle radius, metres")
    width_m: float | None = Field(None, description="corridor full width, metres")
    speed_limit_kmh: Annotated[float, Field(gt=0, le=300)] | None = None
    hysteresis_m: Annotated[float, Field(ge=0, le=1000)] = 15.0
    min_dwell_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    dwell_alert_s: Annotated[float, Field(gt=0)] | None = None
    fleet_id: int | None = Field(None, description="scope: one fleet (default: whole tenant)")
    group_id: int | None = Field(None, description="scope: one vehicle group")
    vehicle_id: int | None = Field(None, description="scope: one vehicle")
    active_hours: ActiveHours | None = None
    severity: Severity = "info"


class GeofenceFeatureIn(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: dict[str, Any] = Field(description="GeoJSON Point / Polygon / LineString, WGS84")
    properties: GeofenceProps


class GeofenceFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: int
    geometry: dict[str, Any]
    properties: dict[str, Any]


class GeofenceCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[GeofenceFeature]


def _feature(r: asyncpg.Record) -> GeofenceFeature:
    props = {
        k: r[k]
        for k in (
            "name",
            "kind",
            "radius_m",
            "width_m",
            "speed_limit_kmh",
            "hysteresis_m",
            "min_dwell_s",
            "dwell_alert_s",
            "fleet_id",
            "group_id",
            "vehicle_id",
            "active_hours",
            "severity",
        )
    }
    props["updated_at"] = r["updated_at"].isoformat()
    return GeofenceFeature(id=r["id"], geometry=r["geometry"], properties=props)


async def _check_scope(pool: asyncpg.Pool, user: Principal, p: GeofenceProps) -> None:
    if sum(x is not None for x in (p.fleet_id, p.group_id, p.vehicle_id)) > 1:
        raise ApiError(
            422,
            "invalid_geofence",
            "attach a geofence to one of fleet_id, group_id or vehicle_id",
            "fleet_id",
        )
    if p.group_id is not None and not await pool.fetchval(
        "SELECT 1 FROM vehicle_groups WHERE id = $1 AND tenant_id = $2", p.group_id, user.tenant_id
    ):
        raise ApiError(422, "invalid_geofence", f"vehicle group {p.group_id} not found", "group_id")
    if p.fleet_id is not None and not await pool.fetchval(
        "SELECT 1 FROM fleets WHERE id = $1 AND tenant_id = $2", p.fleet_id, user.tenant_id
    ):
        raise ApiError(422, "invalid_geofence", f"fleet {p.fleet_id} not found", "fleet_id")
    if p.vehicle_id is not None and not await pool.fetchval(
        "SELECT 1 FROM vehicles WHERE id = $1 AND tenant_id = $2", p.vehicle_id, user.tenant_id
    ):
        raise ApiError(422, "invalid_geofence", f"vehicle {p.vehicle_id} not found", "vehicle_id")


def _validated(body: GeofenceFeatureIn) -> tuple[str, dict[str, Any] | None]:
    p = body.properties
    kind = p.kind or _KIND_OF.get(str(body.geometry.get("type")), "")
    if kind not in KINDS:
        raise ApiError(
            422,
            "invalid_geofence",
            "geometry must be a GeoJSON Point (circle), Polygon or LineString (corridor)",
            "geometry.type",
        )
    hours = p.active_hours.model_dump() if p.active_hours else None
    try:
        validate(kind, body.geometry, p.radius_m, p.width_m, hours)
    except GeofenceError as e:
        raise ApiError(422, "invalid_geofence", str(e), e.field) from None
    return kind, hours


_GEOFENCE_COLS = """name, kind, geometry, radius_m, width_m, speed_limit_kmh, hysteresis_m,
                    min_dwell_s, dwell_alert_s, fleet_id, vehicle_id, active_hours, severity,
                    group_id"""


def _values(kind: str, hours: dict[str, Any] | None, body: GeofenceFeatureIn) -> list[Any]:
    p = body.properties
    return [
        p.name,
        kind,
        body.geometry,
        p.radius_m,
        p.width_m,
        p.speed_limit_kmh,
        p.hysteresis_m,
        p.min_dwell_s,
        p.dwell_alert_s,
        p.fleet_id,
        p.vehicle_id,
        hours,
        p.severity,
        p.group_id,
    ]


@router.get(
    "/geofences",
    response_model=GeofenceCollection,
    tags=["geofences"],
    dependencies=[require_role(*READERS)],
)
async def list_geofences(user: CurrentUser, request: Request) -> GeofenceCollection:
    rows = await _pool(request).fetch(
        "SELECT * FROM geofences WHERE tenant_id = $1 ORDER BY id", user.tenant_id
    )
    return GeofenceCollection(features=[_feature(r) for r in rows])


@router.post(
    "/geofences",
    response_model=GeofenceFeature,
    status_code=201,
    tags=["geofences"],
    dependencies=[require_role(*EDITORS)],
)
async def create_geofence(
    body: GeofenceFeatureIn, user: CurrentUser, request: Request
) -> GeofenceFeature:
    kind, hours = _validated(body)
    pool = _pool(request)
    await _check_scope(pool, user, body.properties)
    row = await pool.fetchrow(
        f"""INSERT INTO geofences (tenant_id, {_GEOFENCE_COLS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            RETURNING *""",
        user.tenant_id,
        *_values(kind, hours, body),
    )
    assert row is not None
    return _feature(row)


@router.get(
    "/geofences/{geofence_id}",
    response_model=GeofenceFeature,
    tags=["geofences"],
    dependencies=[require_role(*READERS)],
)
async def get_geofence(geofence_id: int, user: CurrentUser, request: Request) -> GeofenceFeature:
    row = await _pool(request).fetchrow(
        "SELECT * FROM geofences WHERE id = $1 AND tenant_id = $2", geofence_id, user.tenant_id
    )
    if row is None:
        raise ApiError(404, "not_found", f"geofence {geofence_id} not found")
    return _feature(row)


@router.put(
    "/geofences/{geofence_id}",
    response_model=GeofenceFeature,
    tags=["geofences"],
    dependencies=[require_role(*EDITORS)],
)
async def replace_geofence(
    geofence_id: int, body: GeofenceFeatureIn, user: CurrentUser, request: Request
) -> GeofenceFeature:
    kind, hours = _validated(body)
    pool = _pool(request)
    await _check_scope(pool, user, body.properties)
    row = await pool.fetchrow(
        f"""UPDATE geofences SET ({_GEOFENCE_COLS}, updated_at) =
                ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now())
            WHERE id = $1 AND tenant_id = $2 RETURNING *""",
        geofence_id,
        user.tenant_id,
        *_values(kind, hours, body),
    )
    if row is None:
        raise ApiError(404, "not_found", f"geofence {geofence_id} not found")
    return _feature(row)


@router.delete(
    "/geofences/{geofence_id}",
    status_code=204,
    tags=["geofences"],
    dependencies=[require_role(*EDITORS)],
)
async def delete_geofence(geofence_id: int, user: CurrentUser, request: Request) -> Response:
    done = await _pool(request).execute(
        "DELETE FROM geofences WHERE id = $1 AND tenant_id = $2", geofence_id, user.tenant_id
    )
    if done.endswith(" 0"):
        raise ApiError(404, "not_found", f"geofence {geofence_id} not found")
    return Response(status_code=204)


# -- events ----------------------------------------------------------------------


class EventOut(BaseModel):
    id: int
    vehicle_id: int
    type: str
    severity: str
    t: int = Field(description="fix time of the fix the event is about, UTC ms")
    decided_t: int = Field(description="fix time of the fix that settled it, UTC ms")
    detected_at: datetime
    late: bool = Field(description="found only after newer fixes had been processed")
    throttled: bool = Field(description="over the rule's alert budget: kept, not notified")
    retracted: bool = Field(description="a re-evaluation with late data no longer finds it")
    notify_status: str | None
    lat: float | None
    lon: float | None
    geofence_id: int | None
    details: dict[str, Any]
    acknowledged_at: datetime | None
    acknowledged_by: int | None


def _event(r: asyncpg.Record) -> EventOut:
    return EventOut(
        id=r["id"],
        vehicle_id=r["vehicle_id"],
        type=r["type"],
        severity=r["severity"],
        t=dt_to_ms(r["fix_time"]),
        decided_t=dt_to_ms(r["decided_time"]),
        detected_at=r["detected_at"],
        late=r["late"],
        throttled=r["throttled"],
        retracted=r["retracted_at"] is not None,
        notify_status=r["notify_status"],
        lat=r["lat"],
        lon=r["lon"],
        geofence_id=r["geofence_id"],
        details=r["details"] or {},
        acknowledged_at=r["acknowledged_at"],
        acknowledged_by=r["acknowledged_by"],
    )


@router.get(
    "/events", response_model=list[EventOut], tags=["events"], dependencies=[require_role(*READERS)]
)
async def list_events(
    user: CurrentUser,
    request: Request,
    vehicle_id: int | None = None,
    type: Annotated[list[str] | None, Query(description="repeat for several")] = None,
    min_severity: Severity = "info",
    from_: Annotated[datetime | None, Query(alias="from", description="fix time, ISO-8601")] = None,
    to: Annotated[datetime | None, Query(description="fix time, ISO-8601")] = None,
    unacknowledged: bool = False,
    include_retracted: bool = False,
    include_throttled: bool = True,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> list[EventOut]:
    rows = await _pool(request).fetch(
        """SELECT * FROM events
           WHERE tenant_id = $1
             AND ($2::bigint IS NULL OR vehicle_id = $2)
             AND ($3::text[] IS NULL OR type = ANY($3))
             AND array_position(ARRAY['info','warning','critical'], severity) >= $4
             AND ($5::timestamptz IS NULL OR fix_time >= $5)
             AND ($6::timestamptz IS NULL OR fix_time < $6)
             AND (NOT $7 OR acknowledged_at IS NULL)
             AND ($8 OR retracted_at IS NULL)
             AND ($9 OR NOT throttled)
           ORDER BY fix_time DESC, id DESC LIMIT $10""",
        user.tenant_id,
        vehicle_id,
        type,
        SEVERITIES.index(min_severity) + 1,
        utc(from_),
        utc(to),
        unacknowledged,
        include_retracted,
        include_throttled,
        limit,
    )
    return [_event(r) for r in rows]


@router.get(
    "/alerts", response_model=list[EventOut], tags=["events"], dependencies=[require_role(*READERS)]
)
async def list_alerts(
    user: CurrentUser,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventOut]:
    """The alert feed: warning and critical events, not throttled or retracted, newest first."""
    rows = await _pool(request).fetch(
        """SELECT * FROM events WHERE tenant_id = $1 AND severity <> 'info'
             AND NOT throttled AND retracted_at IS NULL
           ORDER BY fix_time DESC, id DESC LIMIT $2""",
        user.tenant_id,
        limit,
    )
    return [_event(r) for r in rows]


@router.post(
    "/events/{event_id}/acknowledge",
    response_model=EventOut,
    tags=["events"],
    dependencies=[require_role(*ACKERS)],
)
async def acknowledge_event(event_id: int, user: CurrentUser, request: Request) -> EventOut:
    """Acknowledge an event (idempotent: the first acknowledgement is kept)."""
    row = await _pool(request).fetchrow(
        """UPDATE events SET acknowledged_at = COALESCE(acknowledged_at, now()),
                             acknowledged_by = COALESCE(acknowledged_by, $3)
           WHERE id = $1 AND tenant_id = $2 RETURNING *""",
        event_id,
        user.tenant_id,
        user.user_id,
    )
    if row is None:
        raise ApiError(404, "not_found", f"event {event_id} not found")
    return _event(row)


# -- trips and stops ----------------------------------------------------------------


class TripOut(BaseModel):
    start: int = Field(description="UTC ms")
    end: int | None = Field(description="UTC ms; null while the trip goes on")
    start_lat: float
    start_lon: float
    end_lat: float | None
    end_lon: float | None
    distance_m: float
    max_speed_kmh: float
    start_reason: str = Field(description="motion | ignition_on | first_fix | data_resumed")
    end_reason: str | None = Field(description="parked | ignition_off | no_data")
    odometer_start_km: float | None
    odometer_end_km: float | None
    idle_s: float
    overspeed_s: float
    harsh_count: int
    score: float | None = Field(description="driver behaviour, 0..100")
    fuel_l: float | None = Field(None, description="estimated litres used")
    fuel_source: str | None = Field(None, description="maf | level (fuel level x tank size)")


class StopOut(BaseModel):
    start: int
    end: int | None
    lat: float
    lon: float
    start_reason: str
    end_reason: str | None


async def _vehicle_range(
    request: Request, user: Principal, vehicle_id: int, from_: datetime | None, to: datetime | None
) -> tuple[datetime, datetime]:
    await own_vehicle(_pool(request), vehicle_id, user)
    return time_range(from_, to, timedelta(days=7), MAX_RANGE)


FromQ = Annotated[datetime | None, Query(alias="from", description="ISO-8601; default to - 7 d")]
ToQ = Annotated[datetime | None, Query(description="ISO-8601; default now")]


@router.get(
    "/vehicles/{vehicle_id}/trips",
    response_model=list[TripOut],
    tags=["trips"],
    dependencies=[require_role(*READERS)],
)
async def vehicle_trips(
    vehicle_id: int, user: CurrentUser, request: Request, from_: FromQ = None, to: ToQ = None
) -> list[TripOut]:
    start, end = await _vehicle_range(request, user, vehicle_id, from_, to)
    rows = await _pool(request).fetch(
        """SELECT * FROM trips WHERE vehicle_id = $1 AND start_time < $3
             AND (end_time IS NULL OR end_time >= $2) ORDER BY start_time""",
        vehicle_id,
        start,
        end,
    )
    return [
        TripOut(
            start=dt_to_ms(r["start_time"]),
            end=dt_to_ms(r["end_time"]) if r["end_time"] else None,
            start_lat=r["start_lat"],
            start_lon=r["start_lon"],
            end_lat=r["end_lat"],
            end_lon=r["end_lon"],
            distance_m=r["distance_m"],
            max_speed_kmh=r["max_speed"],
            start_reason=r["start_reason"],
            end_reason=r["end_reason"],
            odometer_start_km=r["odometer_start_km"],
            odometer_end_km=r["odometer_end_km"],
            idle_s=r["idle_s"],
            overspeed_s=r["overspeed_s"],
            harsh_count=r["harsh_count"],
            score=r["score"],
            fuel_l=r["fuel_l"],
            fuel_source=r["fuel_source"],
        )
        for r in rows
    ]


class DayBehaviour(BaseModel):
    day: date
    trips: int
    distance_m: float
    drive_s: float
    overspeed_s: float
    harsh_count: int
    idle_s: float
    score: float | None = Field(description="distance-weighted mean of the day's trip scores")
    fuel_l: float | None


@router.get(
    "/vehicles/{vehicle_id}/behaviour",
    response_model=list[DayBehaviour],
    tags=["trips"],
    dependencies=[require_role(*READERS)],
)
async def vehicle_behaviour(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    from_: FromQ = None,
    to: ToQ = None,
    tz: Annotated[str, Query(description="time zone the days are cut in")] = "UTC",
) -> list[DayBehaviour]:
    """Driver behaviour per day, from the closed trips that started that day."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_request", f"unknown time zone {tz[:60]!r}", "tz") from None
    start, end = await _vehicle_range(request, user, vehicle_id, from_, to)
    rows = await _pool(request).fetch(
        """SELECT (start_time AT TIME ZONE $4)::date AS day, count(*) AS trips,
                  sum(distance_m) AS distance_m,
                  sum(extract(epoch FROM end_time - start_time)) AS drive_s,
                  sum(overspeed_s) AS overspeed_s, sum(harsh_count) AS harsh_count,
                  sum(idle_s) AS idle_s,
                  sum(score * distance_m) / nullif(sum(distance_m), 0) AS score,
                  sum(fuel_l) AS fuel_l
           FROM trips WHERE vehicle_id = $1 AND end_time IS NOT NULL
             AND start_time >= $2 AND start_time < $3
           GROUP BY 1 ORDER BY 1""",
        vehicle_id,
        start,
        end,
        tz,
    )
    return [
        DayBehaviour(
            day=r["day"],
            trips=r["trips"],
            distance_m=r["distance_m"],
            drive_s=float(r["drive_s"]),
            overspeed_s=r["overspeed_s"],
            harsh_count=r["harsh_count"],
            idle_s=r["idle_s"],
            score=round(float(r["score"]), 1) if r["score"] is not None else None,
            fuel_l=r["fuel_l"],
        )
        for r in rows
    ]


class OdometerOut(BaseModel):
    vehicle_id: int
    odometer_km: float | None = Field(description="OBD odometer when reported, else GPS")
    source: str | None = Field(description="obd | gps")
    gps_odometer_km: float | None = Field(description="GPS distance since processing began")
    engine_hours: float | None = Field(description="time with ignition on")
    as_of: int | None = Field(description="fix time of the newest processed fix, UTC ms")


@router.get(
    "/vehicles/{vehicle_id}/odometer",
    response_model=OdometerOut,
    tags=["trips"],
    dependencies=[require_role(*READERS)],
)
async def vehicle_odometer(vehicle_id: int, user: CurrentUser, request: Request) -> OdometerOut:
    pool = _pool(request)
    owner = await pool.fetchval("SELECT tenant_id FROM vehicles WHERE id = $1", vehicle_id)
    if owner != user.tenant_id:
        raise ApiError(404, "not_found", f"vehicle {vehicle_id} not found")
    row = await pool.fetchrow(
        "SELECT watermark, state FROM vehicle_proc_state WHERE vehicle_id = $1", vehicle_id
    )
    if row is None:
        return OdometerOut(
            vehicle_id=vehicle_id,
            odometer_km=None,
            source=None,
            gps_odometer_km=None,
            engine_hours=None,
            as_of=None,
        )
    st = row["state"]
    gps = st.get("odo_m", 0.0) / 1000.0
    obd = st.get("obd_odo_km")
    return OdometerOut(
        vehicle_id=vehicle_id,
        odometer_km=obd if obd is not None else gps,
        source="obd" if obd is not None else "gps",
        gps_odometer_km=gps,
        engine_hours=st.get("engine_s", 0.0) / 3600.0,
        as_of=dt_to_ms(row["watermark"]),
    )


@router.get(
    "/vehicles/{vehicle_id}/stops",
    response_model=list[StopOut],
    tags=["trips"],
    dependencies=[require_role(*READERS)],
)
async def vehicle_stops(
    vehicle_id: int, user: CurrentUser, request: Request, from_: FromQ = None, to: ToQ = None
) -> list[StopOut]:
    start, end = await _vehicle_range(request, user, vehicle_id, from_, to)
    rows = await _pool(request).fetch(
        """SELECT * FROM stops WHERE vehicle_id = $1 AND start_time < $3
             AND (end_time IS NULL OR end_time >= $2) ORDER BY start_time""",
        vehicle_id,
        start,
        end,
    )
    return [
        StopOut(
            start=dt_to_ms(r["start_time"]),
            end=dt_to_ms(r["end_time"]) if r["end_time"] else None,
            lat=r["lat"],
            lon=r["lon"],
            start_reason=r["start_reason"],
            end_reason=r["end_reason"],
        )
        for r in rows
    ]


# -- rules -------------------------------------------------------------------------


class RuleIn(BaseModel):
    enabled: bool = True
    severity: Severity | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    vehicle_id: int | None = Field(None, description="override for one vehicle only")


class RuleOut(BaseModel):
    type: str
    vehicle_id: int | None
    enabled: bool
    severity: str | None
    params: dict[str, Any]


def _known_params(rule: str) -> dict[str, Any]:
    if rule == "trips":
        return TRIP_DEFAULTS
    if rule == "throttle":
        return {"per_hour": RuleSet().throttle_per_hour}
    return DEFAULTS[rule][1]


@router.get(
    "/rules", response_model=list[RuleOut], tags=["rules"], dependencies=[require_role(*READERS)]
)
async def list_rules(user: CurrentUser, request: Request) -> list[RuleOut]:
    """Every rule with the tenant's effective settings (defaults where not set), then
    per-vehicle overrides."""
    rows = await _pool(request).fetch(
        "SELECT * FROM event_rules WHERE tenant_id = $1 ORDER BY vehicle_id NULLS FIRST, type",
        user.tenant_id,
    )
    tenant = {r["type"]: r for r in rows if r["vehicle_id"] is None}
    out = []
    for name in RULE_NAMES:
        r = tenant.get(name)
        params = {**_known_params(name), **((r["params"] or {}) if r else {})}
        sev = (r["severity"] if r else None) or (DEFAULTS[name][0] if name in DEFAULTS else None)
        out.append(
            RuleOut(
                type=name,
                vehicle_id=None,
                enabled=r["enabled"] if r else True,
                severity=sev,
                params=params,
            )
        )
    out += [
        RuleOut(
            type=r["type"],
            vehicle_id=r["vehicle_id"],
            enabled=r["enabled"],
            severity=r["severity"],
            params=r["params"] or {},
        )
        for r in rows
        if r["vehicle_id"] is not None
    ]
    return out


@router.put(
    "/rules/{rule}", response_model=RuleOut, tags=["rules"], dependencies=[require_role(*EDITORS)]
)
async def put_rule(rule: str, body: RuleIn, user: CurrentUser, request: Request) -> RuleOut:
    if rule not in RULE_NAMES:
        raise ApiError(404, "not_found", f"no rule {rule!r}; rules: {', '.join(RULE_NAMES)}")
    unknown = set(body.params) - set(_known_params(rule))
    if unknown:
        raise ApiError(
            422,
            "invalid_rule",
            f"unknown parameter(s) {sorted(unknown)} for {rule}; "
            f"known: {sorted(_known_params(rule))}",
            "params",
        )
    for k, v in body.params.items():
        if v is not None and not isinstance(v, int | float | bool):
            raise ApiError(422, "invalid_rule", f"params.{k} must be a number", f"params.{k}")
    pool = _pool(request)
    if body.vehicle_id is not None and not await pool.fetchval(
        "SELECT 1 FROM vehicles WHERE id = $1 AND tenant_id = $2", body.vehicle_id, user.tenant_id
    ):
        raise ApiError(422, "invalid_rule", f"vehicle {body.vehicle_id} not found", "vehicle_id")
    row = await pool.fetchrow(
        """INSERT INTO event_rules (tenant_id, vehicle_id, type, enabled, severity, params)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (tenant_id, vehicle_id, type) DO UPDATE SET enabled = EXCLUDED.enabled,
               severity = EXCLUDED.severity, params = EXCLUDED.params
           RETURNING *""",
        user.tenant_id,
        body.vehicle_id,
        rule,
        body.enabled,
        body.severity,
        body.params,
    )
    assert row is not None
    return RuleOut(
        type=rule,
        vehicle_id=row["vehicle_id"],
        enabled=row["enabled"],
        severity=row["severity"],
        params=row["params"],
    )


# -- webhooks ------------------------------------------------------------------------


class WebhookIn(BaseModel):
    url: AnyHttpUrl
    types: list[str] | None = Field(None, description="event types; null = all")
    min_severity: Severity = "info"
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = Field(
        None, description="HMAC key; generated when omitted (returned once)"
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    types: list[str] | None
    min_severity: str
    enabled: bool
    secret: str | None = Field(default=None, description="only in the response that created it")


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime
    sent_at: datetime | None


@router.get(
    "/webhooks",
    response_model=list[WebhookOut],
    tags=["webhooks"],
    dependencies=[require_role(*EDITORS)],
)
async def list_webhooks(user: CurrentUser, request: Request) -> list[WebhookOut]:
    rows = await _pool(request).fetch(
        "SELECT * FROM webhooks WHERE tenant_id = $1 ORDER BY id", user.tenant_id
    )
    return [
        WebhookOut(
            id=r["id"],
            url=r["url"],
            types=r["types"],
            min_severity=r["min_severity"],
            enabled=r["enabled"],
        )
        for r in rows
    ]


@router.post(
    "/webhooks",
    response_model=WebhookOut,
    status_code=201,
    tags=["webhooks"],
    dependencies=[require_role(*EDITORS)],
)
async def create_webhook(body: WebhookIn, user: CurrentUser, request: Request) -> WebhookOut:
    bad = [t for t in body.types or [] if t not in DEFAULTS]
    if bad:
        raise ApiError(422, "invalid_webhook", f"unknown event types {bad}", "types")
    secret = body.secret or secrets.token_urlsafe(32)
    row = await _pool(request).fetchrow(
        """INSERT INTO webhooks (tenant_id, url, secret, types, min_severity)
           VALUES ($1, $2, $3, $4, $5) RETURNING *""",
        user.tenant_id,
        str(body.url),
        secret,
        body.types,
        body.min_severity,
    )
    assert row is not None
    return WebhookOut(
        id=row["id"],
        url=row["url"],
        types=row["types"],
        min_severity=row["min_severity"],
        enabled=row["enabled"],
        secret=secret,
    )


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    tags=["webhooks"],
    dependencies=[require_role(*EDITORS)],
)
async def delete_webhook(webhook_id: int, user: CurrentUser, request: Request) -> Response:
    done = await _pool(request).execute(
        "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2", webhook_id, user.tenant_id
    )
    if done.endswith(" 0"):
        raise ApiError(404, "not_found", f"webhook {webhook_id} not found")
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=list[DeliveryOut],
    tags=["webhooks"],
    dependencies=[require_role(*EDITORS)],
)
async def webhook_deliveries(
    webhook_id: int,
    user: CurrentUser,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    pool = _pool(request)
    if not await pool.fetchval(
        "SELECT 1 FROM webhooks WHERE id = $1 AND tenant_id = $2", webhook_id, user.tenant_id
    ):  # another tenant's webhook does not exist for you (not an empty list)
        raise ApiError(404, "not_found", f"webhook {webhook_id} not found")
    rows = await pool.fetch(
        """SELECT d.* FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
           WHERE d.webhook_id = $1 AND w.tenant_id = $2 ORDER BY d.id DESC LIMIT $3""",
        webhook_id,
        user.tenant_id,
        limit,
    )
    return [DeliveryOut(**{k: r[k] for k in DeliveryOut.model_fields}) for r in rows]


# -- email recipients ------------------------------------------------------------------


class EmailRecipientIn(BaseModel):
    address: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    types: list[str] | None = Field(None, description="event types; null = all")
    min_severity: Severity = "warning"


class EmailRecipientOut(BaseModel):
    id: int
    address: str
    types: list[str] | None
    min_severity: str
    enabled: bool


@router.get(
    "/email-recipients",
    response_model=list[EmailRecipientOut],
    tags=["notifications"],
    dependencies=[require_role(*EDITORS)],
)
async def list_email_recipients(user: CurrentUser, request: Request) -> list[EmailRecipientOut]:
    rows = await _pool(request).fetch(
        "SELECT * FROM email_recipients WHERE tenant_id = $1 ORDER BY id", user.tenant_id
    )
    return [EmailRecipientOut(**{k: r[k] for k in EmailRecipientOut.model_fields}) for r in rows]


@router.post(
    "/email-recipients",
    response_model=EmailRecipientOut,
    status_code=201,
    tags=["notifications"],
    dependencies=[require_role(*EDITORS)],
)
async def add_email_recipient(
    body: EmailRecipientIn, user: CurrentUser, request: Request
) -> EmailRecipientOut:
    bad = [t for t in body.types or [] if t not in DEFAULTS]
    if bad:
        raise ApiError(422, "invalid_recipient", f"unknown event types {bad}", "types")
    row = await _pool(request).fetchrow(
        """INSERT INTO email_recipients (tenant_id, address, types, min_severity)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, address) DO UPDATE SET types = EXCLUDED.types,
               min_severity = EXCLUDED.min_severity, enabled = true
           RETURNING *""",
        user.tenant_id,
        body.address.lower(),
        body.types,
        body.min_severity,
    )
    assert row is not None
    return EmailRecipientOut(**{k: row[k] for k in EmailRecipientOut.model_fields})


@router.delete(
    "/email-recipients/{recipient_id}",
    status_code=204,
    tags=["notifications"],
    dependencies=[require_role(*EDITORS)],
)
async def delete_email_recipient(
    recipient_id: int, user: CurrentUser, request: Request
) -> Response:
    done = await _pool(request).execute(
        "DELETE FROM email_recipients WHERE id = $1 AND tenant_id = $2",
        recipient_id,
        user.tenant_id,
    )
    if done.endswith(" 0"):
        raise ApiError(404, "not_found", f"email recipient {recipient_id} not found")
    return Response(status_code=204)


# -- routes, visits and the public tracking link ----------------------------------------

MAX_ROUTE_SPAN = timedelta(days=7)


class RouteStopIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    lat: Annotated[float, Field(ge=-85, le=85)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    radius_m: Annotated[float, Field(ge=10, le=5000)] = 75.0
    window_start: datetime | None = None
    window_end: datetime | None = None
    min_dwell_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0


class RouteIn(BaseModel):
    vehicle_id: int
    name: Annotated[str, Field(min_length=1, max_length=200)]
    planned_start: datetime
    planned_end: datetime
    corridor_m: Annotated[float, Field(ge=50, le=50_000)] = 500.0
    stops: Annotated[list[RouteStopIn], Field(min_length=1, max_length=200)]


class RouteStopOut(BaseModel):
    id: int
    seq: int
    name: str
    lat: float
    lon: float
    radius_m: float
    window_start: datetime | None
    window_end: datetime | None
    min_dwell_s: float
    status: str = Field(
        description="planned | arrived | in_progress | completed | skipped | failed"
    )
    status_source: str = Field(description="auto (from the fixes) | manual (a dispatcher)")
    auto_status: str = Field(description="what the fixes say, even when overridden")
    arrived_at: datetime | None
    departed_at: datetime | None
    eta: datetime | None = Field(description="only for the next stop while driving to it")
    share_token: str = Field(description="GET /api/v1/track/{share_token}: read-only, no login")


class RouteOut(BaseModel):
    id: int
    vehicle_id: int
    name: str
    planned_start: datetime
    planned_end: datetime
    corridor_m: float
    stops: list[RouteStopOut]


def _stop_out(s: asyncpg.Record) -> RouteStopOut:
    manual = s["manual_status"]
    fields = {k: s[k] for k in RouteStopOut.model_fields if k in s.keys()}
    fields.update(
        status=manual or s["status"],
        status_source="manual" if manual else "auto",
        auto_status=s["status"],
    )
    return RouteStopOut(**fields)


async def _routes_out(pool: asyncpg.Pool, rows: list[asyncpg.Record]) -> list[RouteOut]:
    stops = await pool.fetch(
        "SELECT * FROM route_stops WHERE route_id = ANY($1::bigint[]) ORDER BY seq",
        [r["id"] for r in rows],
    )
    return [
        RouteOut(
            **{k: r[k] for k in ("id", "vehicle_id", "name", "planned_start", "planned_end")},
            corridor_m=r["corridor_m"],
            stops=[_stop_out(s) for s in stops if s["route_id"] == r["id"]],
        )
        for r in rows
    ]


@router.post(
    "/routes",
    response_model=RouteOut,
    status_code=201,
    tags=["routes"],
    dependencies=[require_role(*ACKERS)],
)
async def create_route(body: RouteIn, user: CurrentUser, request: Request) -> RouteOut:
    start, end = utc(body.planned_start), utc(body.planned_end)
    assert start is not None and end is not None
    if end <= start:
        raise ApiError(
            422, "invalid_route", "planned_end must be after planned_start", "planned_end"
        )
    if end - start > MAX_ROUTE_SPAN:
        raise ApiError(422, "invalid_route", "a route spans at most 7 days", "planned_end")
    for i, s in enumerate(body.stops):
        ws, we = utc(s.window_start), utc(s.window_end)
        if ws and we and we <= ws:
            raise ApiError(
                422,
                "invalid_route",
                "window_end must be after window_start",
                f"stops.{i}.window_end",
            )
    pool = _pool(request)
    if not await pool.fetchval(
        "SELECT 1 FROM vehicles WHERE id = $1 AND tenant_id = $2", body.vehicle_id, user.tenant_id
    ):
        raise ApiError(422, "invalid_route", f"vehicle {body.vehicle_id} not found", "vehicle_id")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO routes (tenant_id, vehicle_id, name, planned_start, planned_end,
                                   corridor_m)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
            user.tenant_id,
            body.vehicle_id,
            body.name,
            start,
            end,
            body.corridor_m,
        )
        assert row is not None
        await conn.executemany(
            """INSERT INTO route_stops (route_id, seq, name, lat, lon, radius_m, window_start,
                                        window_end, min_dwell_s, share_token)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            [
                (
                    row["id"],
                    i + 1,
                    s.name,
                    s.lat,
                    s.lon,
                    s.radius_m,
                    utc(s.window_start),
                    utc(s.window_end),
                    s.min_dwell_s,
                    secrets.token_urlsafe(18),
                )
                for i, s in enumerate(body.stops)
            ],
        )
    return (await _routes_out(pool, [row]))[0]


@router.get(
    "/routes", response_model=list[RouteOut], tags=["routes"], dependencies=[require_role(*READERS)]
)
async def list_routes(
    user: CurrentUser,
    request: Request,
    vehicle_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RouteOut]:
    pool = _pool(request)
    rows = await pool.fetch(
        """SELECT * FROM routes WHERE tenant_id = $1 AND ($2::bigint IS NULL OR vehicle_id = $2)
           ORDER BY planned_start DESC LIMIT $3""",
        user.tenant_id,
        vehicle_id,
        limit,
    )
    return await _routes_out(pool, list(rows))


@router.get(
    "/routes/{route_id}",
    response_model=RouteOut,
    tags=["routes"],
    dependencies=[require_role(*READERS)],
)
async def get_route(route_id: int, user: CurrentUser, request: Request) -> RouteOut:
    pool = _pool(request)
    row = await pool.fetchrow(
        "SELECT * FROM routes WHERE id = $1 AND tenant_id = $2", route_id, user.tenant_id
    )
    if row is None:
        raise ApiError(404, "not_found", f"route {route_id} not found")
    return (await _routes_out(pool, [row]))[0]


class StopStatusIn(BaseModel):
    status: Literal["completed", "skipped", "failed"] | None = Field(
        description="null: back to the status derived from the fixes"
    )


@router.put(
    "/routes/{route_id}/stops/{stop_id}/status",
    response_model=RouteStopOut,
    tags=["routes"],
    dependencies=[require_role(*ACKERS)],
)
async def set_stop_status(
    route_id: int, stop_id: int, body: StopStatusIn, user: CurrentUser, request: Request
) -> RouteStopOut:
    """Settle a stop by hand (customer cancelled, delivered by someone else...)."""
    row = await _pool(request).fetchrow(
        """UPDATE route_stops s SET manual_status = $4,
                  manual_by = CASE WHEN $4::text IS NULL THEN NULL ELSE $5::bigint END,
                  manual_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END
           FROM routes r
           WHERE s.id = $1 AND s.route_id = $2 AND r.id = s.route_id AND r.tenant_id = $3
           RETURNING s.*""",
        stop_id,
        route_id,
        user.tenant_id,
        body.status,
        user.user_id,
    )
    if row is None:
        raise ApiError(404, "not_found", f"stop {stop_id} of route {route_id} not found")
    return _stop_out(row)


@router.delete(
    "/routes/{route_id}", status_code=204, tags=["routes"], dependencies=[require_role(*ACKERS)]
)
async def delete_route(route_id: int, user: CurrentUser, request: Request) -> Response:
    done = await _pool(request).execute(
        "DELETE FROM routes WHERE id = $1 AND tenant_id = $2", route_id, user.tenant_id
    )
    if done.endswith(" 0"):
        raise ApiError(404, "not_found", f"route {route_id} not found")
    return Response(status_code=204)


class TrackOut(BaseModel):
    stop: str
    status: str
    window_start: datetime | None
    window_end: datetime | None
    arrived_at: datetime | None
    departed_at: datetime | None
    eta: datetime | None
    vehicle: dict[str, Any] | None = Field(
        description="the vehicle's last position, only while it is on its way to this stop"
    )


@router.get("/track/{token}", response_model=TrackOut, tags=["routes"])
async def track_delivery(token: str, request: Request) -> TrackOut:
    """Public, read-only view of one delivery (the token is the only credential)."""
    if not 16 <= len(token) <= 64:
        raise ApiError(404, "not_found", "no such tracking link")
    row = await _pool(request).fetchrow(
        """SELECT s.*, r.vehicle_id, r.planned_start, r.planned_end FROM route_stops s
           JOIN routes r ON r.id = s.route_id WHERE s.share_token = $1""",
        token,
    )
    if row is None:
        raise ApiError(404, "not_found", "no such tracking link")
    vehicle = None
    live = request.app.state.live.get(row["vehicle_id"])
    now = datetime.now(UTC)
    if live and row["status"] in ("planned", "arrived") and row["planned_start"] <= now:
        if now <= row["planned_end"]:
            vehicle = {k: live.get(k) for k in ("t", "lat", "lon", "spd", "hdg")}
    return TrackOut(
        stop=row["name"],
        status=row["manual_status"] or row["status"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        arrived_at=row["arrived_at"],
        departed_at=row["departed_at"],
        eta=row["eta"],
        vehicle=vehicle,
    )


# -- vehicle groups ----------------------------------------------------------------------


class VehicleGroupIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    vehicle_ids: Annotated[list[int], Field(max_length=10_000)] = Field(default_factory=list)


class VehicleGroupOut(BaseModel):
    id: int
    name: str
    vehicle_ids: list[int]


async def _group_out(pool: asyncpg.Pool, tenant_id: int, gid: int) -> VehicleGroupOut:
    row = await pool.fetchrow(
        """SELECT g.id, g.name, coalesce(array_agg(m.vehicle_id ORDER BY m.vehicle_id)
                  FILTER (WHERE m.vehicle_id IS NOT NULL), '{}') AS vehicle_ids
           FROM vehicle_groups g LEFT JOIN vehicle_group_members m ON m.group_id = g.id
           WHERE g.id = $1 AND g.tenant_id = $2 GROUP BY g.id""",
        gid,
        tenant_id,
    )
    if row is None:
        raise ApiError(404, "not_found", f"vehicle group {gid} not found")
    return VehicleGroupOut(id=row["id"], name=row["name"], vehicle_ids=list(row["vehicle_ids"]))


async def _set_members(
    conn: asyncpg.Connection, tenant_id: int, gid: int, vehicle_ids: list[int]
) -> None:
    found = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM vehicles WHERE tenant_id = $1 AND id = ANY($2::bigint[])",
            tenant_id,
            vehicle_ids,
        )
    }
    missing = sorted(set(vehicle_ids) - found)
    if missing:
        raise ApiError(422, "invalid_group", f"vehicles not found: {missing[:20]}", "vehicle_ids")
    await conn.execute("DELETE FROM vehicle_group_members WHERE group_id = $1", gid)
    await conn.executemany(
        "INSERT INTO vehicle_group_members (group_id, vehicle_id) VALUES ($1, $2)",
        [(gid, v) for v in sorted(found)],
    )


@router.get(
    "/vehicle-groups",
    response_model=list[VehicleGroupOut],
    tags=["geofences"],
    dependencies=[require_role(*READERS)],
)
async def list_vehicle_groups(user: CurrentUser, request: Request) -> list[VehicleGroupOut]:
    pool = _pool(request)
    ids = await pool.fetch(
        "SELECT id FROM vehicle_groups WHERE tenant_id = $1 ORDER BY name", user.tenant_id
    )
    return [await _group_out(pool, user.tenant_id, r["id"]) for r in ids]


@router.post(
    "/vehicle-groups",
    response_model=VehicleGroupOut,
    status_code=201,
    tags=["geofences"],
    responses={409: {"model": ErrorResponse, "description": "A group of that name exists"}},
    dependencies=[require_role(*EDITORS)],
)
async def create_vehicle_group(
    body: VehicleGroupIn, user: CurrentUser, request: Request
) -> VehicleGroupOut:
    pool = _pool(request)
    async with pool.acquire() as conn, conn.transaction():
        gid = await conn.fetchval(
            """INSERT INTO vehicle_groups (tenant_id, name) VALUES ($1, $2)
               ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id""",
            user.tenant_id,
            body.name,
        )
        if gid is None:
            raise ApiError(409, "conflict", f"a group named {body.name!r} exists", "name")
        await _set_members(conn, user.tenant_id, gid, body.vehicle_ids)
    return await _group_out(pool, user.tenant_id, gid)


@router.put(
    "/vehicle-groups/{group_id}/vehicles",
    response_model=VehicleGroupOut,
    tags=["geofences"],
    dependencies=[require_role(*EDITORS)],
)
async def set_vehicle_group_members(
    group_id: int, vehicle_ids: list[int], user: CurrentUser, request: Request
) -> VehicleGroupOut:
    """Replace the group's members (processing uses them from the next fixes on)."""
    pool = _pool(request)
    await _group_out(pool, user.tenant_id, group_id)  # 404 for another tenant's group
    async with pool.acquire() as conn, conn.transaction():
        await _set_members(conn, user.tenant_id, group_id, vehicle_ids)
    return await _group_out(pool, user.tenant_id, group_id)


@router.delete(
    "/vehicle-groups/{group_id}",
    status_code=204,
    tags=["geofences"],
    responses={409: {"model": ErrorResponse, "description": "Geofences are attached to it"}},
    dependencies=[require_role(*EDITORS)],
)
async def delete_vehicle_group(group_id: int, user: CurrentUser, request: Request) -> Response:
    pool = _pool(request)
    try:
        done = await pool.execute(
            "DELETE FROM vehicle_groups WHERE id = $1 AND tenant_id = $2", group_id, user.tenant_id
        )
    except asyncpg.ForeignKeyViolationError:
        used = await pool.fetch(
            "SELECT id FROM geofences WHERE group_id = $1 ORDER BY id LIMIT 20", group_id
        )
        raise ApiError(
            409,
            "in_use",
            f"geofences {[r['id'] for r in used]} are attached to this group; "
            "move or delete them first",
        ) from None
    if done.endswith(" 0"):
        raise ApiError(404, "not_found", f"vehicle group {group_id} not found")
    return Response(status_code=204)
