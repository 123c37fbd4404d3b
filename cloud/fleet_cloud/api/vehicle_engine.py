"""The newest engine values of a vehicle (the dashboard's vehicle panel).

The live state carries engine values only while the newest fix has them; a
parked vehicle (no fixes for hours) or a restarted cloud has none there, yet
its last fuel level, battery voltage and fault codes are what a fleet manager
looks at. The device's status (outbox backlog) is GET /devices?vehicle_id=.
"""

from __future__ import annotations

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, require_role
from fleet_cloud.api.errors import ERROR_RESPONSES
from fleet_cloud.api.scoping import own_vehicle
from fleet_cloud.store import dt_to_ms

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

# As for trips and events: installers see positions, not the fleet's operating data.
READERS = ("owner", "manager", "dispatcher", "viewer")


class EngineValues(BaseModel):
    t: int = Field(description="when the values were read, UTC ms")
    rpm: float | None = None
    vss: float | None = Field(None, description="vehicle speed from the ECU, km/h")
    ect: float | None = Field(None, description="coolant, degC")
    load: float | None = Field(None, description="engine load, %")
    tps: float | None = Field(None, description="throttle, %")
    fuel: float | None = Field(None, description="fuel level, %")
    iat: float | None = Field(None, description="intake air, degC")
    maf: float | None = Field(None, description="g/s")
    vbat: float | None = Field(None, description="volts")
    run_s: int | None = Field(None, description="seconds since engine start")
    odo_km: float | None = None
    ign: bool | None = None
    dtc: list[str] | None = None


class VehicleEngineOut(BaseModel):
    vehicle_id: int
    engine: EngineValues | None = Field(description="null: no engine values received yet")


_NEWEST = """
SELECT sample_time, rpm, vss, ect, load, tps, fuel, iat, maf, vbat, run_s, odo_km, ign, dtc
FROM engine_samples WHERE vehicle_id = $1 ORDER BY sample_time DESC LIMIT 1"""


@router.get(
    "/vehicles/{vehicle_id}/engine",
    response_model=VehicleEngineOut,
    tags=["vehicles"],
    dependencies=[require_role(*READERS)],
    summary="The newest OBD-II values stored for the vehicle",
)
async def vehicle_engine(vehicle_id: int, user: CurrentUser, request: Request) -> VehicleEngineOut:
    pool: asyncpg.Pool = request.app.state.pool
    await own_vehicle(pool, vehicle_id, user)
    row = await pool.fetchrow(_NEWEST, vehicle_id)
    if row is None:
        return VehicleEngineOut(vehicle_id=vehicle_id, engine=None)
    values = {k: row[k] for k in EngineValues.model_fields if k != "t"}
    return VehicleEngineOut(
        vehicle_id=vehicle_id, engine=EngineValues(t=dt_to_ms(row["sample_time"]), **values)
    )
