"""Daily summaries per vehicle (distance, fixes, speeds, moving and idle time, trips),
built from the hourly rollup table, for the whole tenant or one fleet (with its
sub-fleets) or one vehicle, with days in the caller's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, require_role
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["reports"])

READERS = ("owner", "manager", "dispatcher", "viewer")
MAX_DAYS = 92


class DailySummary(BaseModel):
    day: date = Field(description="the day, in the requested time zone")
    vehicle_id: int
    vehicle_name: str
    fixes: int
    distance_km: float
    max_speed_kmh: float | None
    avg_speed_kmh: float | None
    moving_s: float = Field(description="seconds moving (speed > 3 km/h)")
    idle_s: float = Field(description="seconds with ignition on and speed <= 3 km/h")
    trips: int = Field(description="trips that started that day")


# A day is made of the hourly buckets that start in it (in the requested zone);
# in a zone with a non-whole-hour offset an hour counts for the day it starts in.
_DAILY = """
WITH scope AS (
    SELECT v.id, v.name FROM vehicles v
    WHERE v.tenant_id = $1
      AND ($5::bigint IS NULL OR v.id = $5)
      AND ($6::bigint IS NULL OR v.fleet_id IN (
          WITH RECURSIVE sub AS (
              SELECT id FROM fleets WHERE id = $6 AND tenant_id = $1
              UNION SELECT f.id FROM fleets f JOIN sub ON f.parent_id = sub.id)
          SELECT id FROM sub))
), stats AS (
    SELECT (h.bucket AT TIME ZONE $4)::date AS day, h.vehicle_id, sum(h.fixes)::int8 AS fixes,
           sum(h.distance_km) AS distance_km, max(h.max_speed_kmh) AS max_speed_kmh,
           sum(h.avg_speed_kmh * h.fixes) / nullif(sum(h.fixes), 0) AS avg_speed_kmh,
           sum(h.moving_s) AS moving_s, sum(h.idle_s) AS idle_s
    FROM vehicle_stats_hourly h JOIN scope s ON s.id = h.vehicle_id
    WHERE h.bucket >= $2 AND h.bucket < $3
    GROUP BY 1, 2
), trip_days AS (
    SELECT (t.start_time AT TIME ZONE $4)::date AS day, t.vehicle_id, count(*) AS trips
    FROM trips t JOIN scope s ON s.id = t.vehicle_id
    WHERE t.start_time >= $2 AND t.start_time < $3
    GROUP BY 1, 2
)
SELECT coalesce(st.day, td.day) AS day, s.id AS vehicle_id, s.name AS vehicle_name,
       coalesce(st.fixes, 0) AS fixes, coalesce(st.distance_km, 0) AS distance_km,
       st.max_speed_kmh, st.avg_speed_kmh, coalesce(st.moving_s, 0) AS moving_s,
       coalesce(st.idle_s, 0) AS idle_s, coalesce(td.trips, 0) AS trips
FROM stats st
FULL JOIN trip_days td ON td.day = st.day AND td.vehicle_id = st.vehicle_id
JOIN scope s ON s.id = coalesce(st.vehicle_id, td.vehicle_id)
ORDER BY 1, 3, 2"""


@router.get(
    "/summaries/daily",
    response_model=list[DailySummary],
    dependencies=[require_role(*READERS)],
    summary="One row per vehicle and day that had data; the hourly rollup lags ingest by "
    "up to FLEET_ROLLUP_INTERVAL_S",
)
async def daily_summaries(
    user: CurrentUser,
    request: Request,
    from_: Annotated[
        date | None, Query(alias="from", description="first day; default: to - 6")
    ] = None,
    to: Annotated[date | None, Query(description="last day (included); default: today")] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA time zone of the days")] = "UTC",
    fleet_id: Annotated[int | None, Query(description="only this fleet and its sub-fleets")] = None,
    vehicle_id: Annotated[int | None, Query(description="only this vehicle")] = None,
) -> list[DailySummary]:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_request", f"unknown time zone {tz[:60]!r}", "tz") from None
    last = to or datetime.now(zone).date()
    first = from_ or last - timedelta(days=6)
    if first > last:
        raise ApiError(422, "invalid_request", "from must not be after to", "from")
    if (last - first).days >= MAX_DAYS:
        raise ApiError(422, "range_too_long", f"at most {MAX_DAYS} days per request", "from")
    try:
        start = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "invalid_request", "dates out of range", "to") from None
    pool: asyncpg.Pool = request.app.state.pool
    await _check_scope(pool, user.tenant_id, fleet_id, vehicle_id)
    try:
        rows = await pool.fetch(_DAILY, user.tenant_id, start, end, tz, vehicle_id, fleet_id)
    except asyncpg.InvalidParameterValueError:  # a zone Python knows and PostgreSQL does not
        raise ApiError(422, "invalid_request", f"unknown time zone {tz[:60]!r}", "tz") from None
    return [DailySummary(**dict(r)) for r in rows]


async def _check_scope(
    pool: asyncpg.Pool, tenant_id: int, fleet_id: int | None, vehicle_id: int | None
) -> None:
    """A filter naming another tenant's fleet or vehicle is a 404, not an empty list."""
    for table, ident in (("fleets", fleet_id), ("vehicles", vehicle_id)):
        if ident is not None and not await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1 AND tenant_id = $2)",
            ident,
            tenant_id,
        ):
            raise ApiError(404, "not_found", f"{table[:-1]} {ident} not found")
