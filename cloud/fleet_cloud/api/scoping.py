"""Request scoping shared by the routers: the caller's tenant owns the vehicle; time ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

import asyncpg

from fleet_cloud.api.auth import Principal
from fleet_cloud.api.errors import ApiError


@overload
def utc(dt: datetime) -> datetime: ...
@overload
def utc(dt: None) -> None: ...
def utc(dt: datetime | None) -> datetime | None:
    """A naive datetime from a query is taken as UTC."""
    return None if dt is None else dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def own_vehicle(pool: asyncpg.Pool, vehicle_id: int, user: Principal) -> None:
    """404 unless the vehicle is the caller's tenant's: another tenant's does not exist for you."""
    owner = await pool.fetchval("SELECT tenant_id FROM vehicles WHERE id = $1", vehicle_id)
    if owner != user.tenant_id:
        raise ApiError(404, "not_found", f"vehicle {vehicle_id} not found")


def time_range(
    from_: datetime | None,
    to: datetime | None,
    default: timedelta,
    max_span: timedelta | None = None,
) -> tuple[datetime, datetime]:
    """[from, to) in UTC: to defaults to now, from to `default` before it; span-capped."""
    end = utc(to) if to else datetime.now(UTC)
    start = utc(from_) if from_ else end - default
    if start > end:
        raise ApiError(422, "invalid_request", "from must be before to", "from")
    if max_span is not None and end - start > max_span:
        raise ApiError(422, "range_too_long", f"at most {max_span.days} days per request", "from")
    return start, end
