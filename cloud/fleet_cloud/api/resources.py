"""The tenant's directory over REST: users (the owner manages them), fleets (nested),
vehicles (create, read, change, delete) and devices (read; provisioning is elsewhere).

Every query carries the caller's tenant: another tenant's id answers 404 like an
id that does not exist. The vehicle list itself (with live state) is in routes.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, require_role
from fleet_cloud.api.auth_routes import Role
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from fleet_cloud.api.routes import VehicleState
from fleet_cloud.directory import hash_password
from fleet_cloud.live import LiveState

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

OWNERS = ("owner",)
EDITORS = ("owner", "manager")
USER_READERS = ("owner", "manager")
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Clashes with an existing record"}
}

Name = Annotated[str, Field(min_length=1, max_length=200)]
# Ids are PostgreSQL bigints: larger numbers cannot name anything, so they are
# refused as invalid rather than reaching the database.
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found")


# -- users ----------------------------------------------------------------------


class UserIn(BaseModel):
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    password: Annotated[str, Field(min_length=8, max_length=1024)]
    role: Role = "viewer"


class UserPatch(BaseModel):
    role: Role | None = None
    password: Annotated[str, Field(min_length=8, max_length=1024)] | None = None


class UserAccount(BaseModel):
    id: int
    email: str
    role: str
    created_at: datetime


_USER_COLS = "id, email, role, created_at"


@router.get(
    "/users",
    response_model=list[UserAccount],
    tags=["users"],
    dependencies=[require_role(*USER_READERS)],
)
async def list_users(user: CurrentUser, request: Request) -> list[UserAccount]:
    rows = await _pool(request).fetch(
        f"SELECT {_USER_COLS} FROM users WHERE tenant_id = $1 ORDER BY email", user.tenant_id
    )
    return [UserAccount(**dict(r)) for r in rows]


@router.post(
    "/users",
    response_model=UserAccount,
    status_code=201,
    tags=["users"],
    responses=CONFLICT,
    dependencies=[require_role(*OWNERS)],
)
async def create_user(body: UserIn, user: CurrentUser, request: Request) -> UserAccount:
    row = await _pool(request).fetchrow(
        f"""INSERT INTO users (tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4)
            ON CONFLICT (email) DO NOTHING RETURNING {_USER_COLS}""",
        user.tenant_id,
        body.email.lower(),
        hash_password(body.password),
        body.role,
    )
    if row is None:  # emails are unique across tenants: they are the login
        raise ApiError(409, "conflict", f"{body.email.lower()} is already registered", "email")
    return UserAccount(**dict(row))


async def _user_row(pool: asyncpg.Pool | asyncpg.Connection, tenant_id: int, uid: int) -> Any:
    row = await pool.fetchrow(
        f"SELECT {_USER_COLS} FROM users WHERE id = $1 AND tenant_id = $2", uid, tenant_id
    )
    if row is None:
        raise _not_found("user", uid)
    return row


@router.get(
    "/users/{user_id}",
    response_model=UserAccount,
    tags=["users"],
    dependencies=[require_role(*USER_READERS)],
)
async def get_user(user_id: int, user: CurrentUser, request: Request) -> UserAccount:
    return UserAccount(**dict(await _user_row(_pool(request), user.tenant_id, user_id)))


async def _check_not_last_owner(conn: asyncpg.Connection, tenant_id: int, uid: int) -> None:
    others = await conn.fetchval(
        "SELECT count(*) FROM users WHERE tenant_id = $1 AND role = 'owner' AND id <> $2",
        tenant_id,
        uid,
    )
    if others == 0:
        raise ApiError(409, "last_owner", "a tenant keeps at least one owner", "role")


@router.patch(
    "/users/{user_id}",
    response_model=UserAccount,
    tags=["users"],
    responses=CONFLICT,
    dependencies=[require_role(*OWNERS)],
    summary="Change a user's role or password; the user's sessions end (sign in again)",
)
async def update_user(
    user_id: int, body: UserPatch, user: CurrentUser, request: Request
) -> UserAccount:
    async with _pool(request).acquire() as conn, conn.transaction():
        cur = await _user_row(conn, user.tenant_id, user_id)
        # Lock the tenant's owners so two demotions at once cannot leave none.
        await conn.execute(
            "SELECT id FROM users WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
            user.tenant_id,
        )
        if body.role is not None and cur["role"] == "owner" and body.role != "owner":
            await _check_not_last_owner(conn, user.tenant_id, user_id)
        row = await conn.fetchrow(
            f"""UPDATE users SET role = coalesce($3, role),
                                 password_hash = coalesce($4, password_hash)
                WHERE id = $1 AND tenant_id = $2 RETURNING {_USER_COLS}""",
            user_id,
            user.tenant_id,
            body.role,
            hash_password(body.password) if body.password is not None else None,
        )
        if body.role is not None or body.password is not None:
            # Tokens carry the role: end the sessions so none keeps the old one.
            await conn.execute(
                """UPDATE auth_sessions SET revoked_at = now(), revoked_why = 'user changed'
                   WHERE user_id = $1 AND revoked_at IS NULL""",
                user_id,
            )
    return UserAccount(**dict(row))


@router.delete(
    "/users/{user_id}",
    status_code=204,
    tags=["users"],
    responses=CONFLICT,
    dependencies=[require_role(*OWNERS)],
    summary="Delete a user: their sessions and API keys end with them",
)
async def delete_user(user_id: int, user: CurrentUser, request: Request) -> Response:
    async with _pool(request).acquire() as conn, conn.transaction():
        cur = await _user_row(conn, user.tenant_id, user_id)
        if user_id == user.user_id:
            raise ApiError(409, "conflict", "you cannot delete yourself; ask another owner")
        await conn.execute(
            "SELECT id FROM users WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
            user.tenant_id,
        )
        if cur["role"] == "owner":
            await _check_not_last_owner(conn, user.tenant_id, user_id)
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
    return Response(status_code=204)


# -- fleets ---------------------------------------------------------------------


class FleetIn(BaseModel):
    name: Name
    parent_id: Id | None = Field(None, description="the fleet this one is part of")


class FleetPatch(BaseModel):
    name: Name | None = None
    parent_id: Id | None = Field(None, description="null (when given): make it a top fleet")


class FleetOut(BaseModel):
    id: int
    name: str
    parent_id: int | None
    vehicles: int = Field(description="vehicles directly in this fleet (not its sub-fleets)")


_FLEETS = """
SELECT f.id, f.name, f.parent_id,
       (SELECT count(*) FROM vehicles v WHERE v.fleet_id = f.id) AS vehicles
FROM fleets f WHERE f.tenant_id = $1"""

# The fleet and every fleet under it. UNION (not UNION ALL) ends the walk even if
# the table ever held a cycle.
_SUBTREE = """
WITH RECURSIVE sub AS (
    SELECT id FROM fleets WHERE id = $1 AND tenant_id = $2
    UNION
    SELECT f.id FROM fleets f JOIN sub ON f.parent_id = sub.id
)"""


@router.get("/fleets", response_model=list[FleetOut], tags=["fleets"])
async def list_fleets(user: CurrentUser, request: Request) -> list[FleetOut]:
    """Every fleet of the tenant, flat; `parent_id` gives the tree."""
    rows = await _pool(request).fetch(_FLEETS + " ORDER BY f.name", user.tenant_id)
    return [FleetOut(**dict(r)) for r in rows]


async def _fleet(pool: asyncpg.Pool | asyncpg.Connection, tenant_id: int, fid: int) -> FleetOut:
    row = await pool.fetchrow(_FLEETS + " AND f.id = $2", tenant_id, fid)
    if row is None:
        raise _not_found("fleet", fid)
    return FleetOut(**dict(row))


async def _check_parent(
    conn: asyncpg.Connection, tenant_id: int, parent_id: int, fid: int | None = None
) -> None:
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM fleets WHERE id = $1 AND tenant_id = $2)",
        parent_id,
        tenant_id,
    ):
        raise ApiError(422, "invalid_request", f"fleet {parent_id} not found", "parent_id")
    if fid is not None and await conn.fetchval(
        _SUBTREE + " SELECT EXISTS (SELECT 1 FROM sub WHERE id = $3)", fid, tenant_id, parent_id
    ):
        raise ApiError(
            422, "invalid_request", "a fleet cannot be inside itself or its sub-fleets", "parent_id"
        )


@router.post(
    "/fleets",
    response_model=FleetOut,
    status_code=201,
    tags=["fleets"],
    responses=CONFLICT,
    dependencies=[require_role(*EDITORS)],
)
async def create_fleet(body: FleetIn, user: CurrentUser, request: Request) -> FleetOut:
    async with _pool(request).acquire() as conn, conn.transaction():
        if body.parent_id is not None:
            await _check_parent(conn, user.tenant_id, body.parent_id)
        fid = await conn.fetchval(
            """INSERT INTO fleets (tenant_id, name, parent_id) VALUES ($1, $2, $3)
               ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id""",
            user.tenant_id,
            body.name,
            body.parent_id,
        )
        if fid is None:
            raise ApiError(409, "conflict", f"a fleet named {body.name!r} exists", "name")
        return await _fleet(conn, user.tenant_id, fid)


@router.get("/fleets/{fleet_id}", response_model=FleetOut, tags=["fleets"])
async def get_fleet(fleet_id: int, user: CurrentUser, request: Request) -> FleetOut:
    return await _fleet(_pool(request), user.tenant_id, fleet_id)


@router.patch(
    "/fleets/{fleet_id}",
    response_model=FleetOut,
    tags=["fleets"],
    responses=CONFLICT,
    dependencies=[require_role(*EDITORS)],
    summary="Rename a fleet or move it under another one (or to the top: parent_id null)",
)
async def update_fleet(
    fleet_id: int, body: FleetPatch, user: CurrentUser, request: Request
) -> FleetOut:
    async with _pool(request).acquire() as conn, conn.transaction():
        cur = await _fleet(conn, user.tenant_id, fleet_id)
        if "name" in body.model_fields_set and body.name is None:
            raise ApiError(422, "invalid_request", "name: may not be null", "name")
        parent = cur.parent_id
        if "parent_id" in body.model_fields_set:
            parent = body.parent_id
            if parent is not None:
                await _check_parent(conn, user.tenant_id, parent, fleet_id)
        try:
            await conn.execute(
                "UPDATE fleets SET name = $2, parent_id = $3 WHERE id = $1",
                fleet_id,
                body.name or cur.name,
                parent,
            )
        except asyncpg.UniqueViolationError:
            raise ApiError(409, "conflict", f"a fleet named {body.name!r} exists", "name") from None
        return await _fleet(conn, user.tenant_id, fleet_id)


@router.delete(
    "/fleets/{fleet_id}",
    status_code=204,
    tags=["fleets"],
    responses=CONFLICT,
    dependencies=[require_role(*EDITORS)],
    summary="Delete an empty fleet (no vehicles, sub-fleets, geofences or remote config)",
)
async def delete_fleet(fleet_id: int, user: CurrentUser, request: Request) -> Response:
    async with _pool(request).acquire() as conn, conn.transaction():
        await _fleet(conn, user.tenant_id, fleet_id)
        # Refused rather than cascaded: deleting a fleet would otherwise silently
        # delete its geofences, config layer and rollout history (FK cascades) and
        # scatter its vehicles.
        used = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM vehicles WHERE fleet_id = $1) AS vehicles,
                      (SELECT count(*) FROM fleets WHERE parent_id = $1) AS "sub-fleets",
                      (SELECT count(*) FROM geofences WHERE fleet_id = $1) AS geofences,
                      (SELECT count(*) FROM config_layers WHERE fleet_id = $1)
                          AS "remote config layers",
                      (SELECT count(*) FROM config_rollouts WHERE fleet_id = $1)
                          AS "config rollouts"
            """,
            fleet_id,
        )
        assert used is not None
        held = [f"{n} {k}" for k, n in dict(used).items() if n]
        if held:
            raise ApiError(
                409, "in_use", f"fleet {fleet_id} still has {', '.join(held)}; move them first"
            )
        await conn.execute("DELETE FROM fleets WHERE id = $1", fleet_id)
    return Response(status_code=204)


# -- vehicles -------------------------------------------------------------------


class VehicleIn(BaseModel):
    name: Name
    plate: Annotated[str, Field(max_length=32)] | None = None
    fleet_id: Id | None = None


class VehiclePatch(BaseModel):
    name: Name | None = None
    plate: Annotated[str, Field(max_length=32)] | None = None
    fleet_id: Id | None = Field(None, description="null (when given): in no fleet")


class VehicleRecord(BaseModel):
    id: int
    name: str
    plate: str | None
    fleet_id: int | None
    device_id: str | None = Field(description="the unit installed in it, if any")
    created_at: datetime
    state: VehicleState | None = Field(description="latest live state, if it ever reported")


_VEHICLES = """
SELECT v.id, v.name, v.plate, v.fleet_id, v.created_at, d.device_id
FROM vehicles v LEFT JOIN devices d ON d.vehicle_id = v.id
WHERE v.tenant_id = $1"""


def _record(row: asyncpg.Record, live: LiveState) -> VehicleRecord:
    s = live.get(row["id"])
    state = None if s is None else VehicleState(**{k: s.get(k) for k in VehicleState.model_fields})
    return VehicleRecord(**dict(row), state=state)


async def _vehicle(request: Request, tenant_id: int, vid: int) -> VehicleRecord:
    row = await _pool(request).fetchrow(_VEHICLES + " AND v.id = $2", tenant_id, vid)
    if row is None:
        raise _not_found("vehicle", vid)
    return _record(row, request.app.state.live)


async def _check_fleet(conn: asyncpg.Connection, tenant_id: int, fleet_id: int | None) -> None:
    if fleet_id is not None and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM fleets WHERE id = $1 AND tenant_id = $2)",
        fleet_id,
        tenant_id,
    ):
        raise ApiError(422, "invalid_request", f"fleet {fleet_id} not found", "fleet_id")


@router.get(
    "/fleets/{fleet_id}/vehicles",
    response_model=list[VehicleRecord],
    tags=["fleets"],
    summary="The vehicles of a fleet, and of its sub-fleets unless nested=false",
)
async def fleet_vehicles(
    fleet_id: int,
    user: CurrentUser,
    request: Request,
    nested: Annotated[bool, Query(description="include the fleets under this one")] = True,
) -> list[VehicleRecord]:
    pool = _pool(request)
    await _fleet(pool, user.tenant_id, fleet_id)
    rows = await pool.fetch(
        _SUBTREE
        + _VEHICLES.replace("WHERE v.tenant_id = $1", "WHERE v.tenant_id = $2")
        + " AND (v.fleet_id = $1 OR ($3 AND v.fleet_id IN (SELECT id FROM sub)))"
        + " ORDER BY v.name",
        fleet_id,
        user.tenant_id,
        nested,
    )
    return [_record(r, request.app.state.live) for r in rows]


@router.post(
    "/vehicles",
    response_model=VehicleRecord,
    status_code=201,
    tags=["vehicles"],
    responses=CONFLICT,
    dependencies=[require_role(*EDITORS)],
)
async def create_vehicle(body: VehicleIn, user: CurrentUser, request: Request) -> VehicleRecord:
    async with _pool(request).acquire() as conn, conn.transaction():
        await _check_fleet(conn, user.tenant_id, body.fleet_id)
        vid = await conn.fetchval(
            """INSERT INTO vehicles (tenant_id, fleet_id, name, plate) VALUES ($1, $2, $3, $4)
               ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id""",
            user.tenant_id,
            body.fleet_id,
            body.name,
            body.plate,
        )
    if vid is None:
        raise ApiError(409, "conflict", f"a vehicle named {body.name!r} exists", "name")
    return await _vehicle(request, user.tenant_id, vid)


@router.get("/vehicles/{vehicle_id}", response_model=VehicleRecord, tags=["vehicles"])
async def get_vehicle(vehicle_id: int, user: CurrentUser, request: Request) -> VehicleRecord:
    return await _vehicle(request, user.tenant_id, vehicle_id)


@router.patch(
    "/vehicles/{vehicle_id}",
    response_model=VehicleRecord,
    tags=["vehicles"],
    responses=CONFLICT,
    dependencies=[require_role(*EDITORS)],
)
async def update_vehicle(
    vehicle_id: int, body: VehiclePatch, user: CurrentUser, request: Request
) -> VehicleRecord:
    cur = await _vehicle(request, user.tenant_id, vehicle_id)
    given = body.model_fields_set
    if "name" in given and body.name is None:
        raise ApiError(422, "invalid_request", "name: may not be null", "name")
    async with _pool(request).acquire() as conn, conn.transaction():
        fleet_id = body.fleet_id if "fleet_id" in given else cur.fleet_id
        await _check_fleet(conn, user.tenant_id, fleet_id)
        try:
            await conn.execute(
                "UPDATE vehicles SET name = $2, plate = $3, fleet_id = $4 WHERE id = $1",
                vehicle_id,
                body.name or cur.name,
                body.plate if "plate" in given else cur.plate,
                fleet_id,
            )
        except asyncpg.UniqueViolationError:
            raise ApiError(
                409, "conflict", f"a vehicle named {body.name!r} exists", "name"
            ) from None
    return await _vehicle(request, user.tenant_id, vehicle_id)


@router.delete(
    "/vehicles/{vehicle_id}",
    status_code=204,
    tags=["vehicles"],
    dependencies=[require_role(*EDITORS)],
    summary="Delete a vehicle with its events, trips and stops; its device stays, unassigned",
)
async def delete_vehicle(vehicle_id: int, user: CurrentUser, request: Request) -> Response:
    done = await _pool(request).execute(
        "DELETE FROM vehicles WHERE id = $1 AND tenant_id = $2", vehicle_id, user.tenant_id
    )
    if done.endswith(" 0"):
        raise _not_found("vehicle", vehicle_id)
    request.app.state.live.forget(vehicle_id)
    return Response(status_code=204)


# -- devices --------------------------------------------------------------------


class DeviceOut(BaseModel):
    device_id: str
    vehicle_id: int | None
    enabled: bool
    created_at: datetime
    online: bool | None = Field(description="from its last status message; null: never sent one")
    status_at: datetime | None = Field(description="when the cloud received that status")
    status: dict[str, Any] | None = Field(
        description="its last status message as sent (agent version, outbox backlog, health)"
    )


_DEVICES = """
SELECT d.device_id, d.vehicle_id, d.enabled, d.created_at, s.online,
       s.updated_at AS status_at, s.status
FROM devices d LEFT JOIN device_status s ON s.device_id = d.device_id
WHERE d.tenant_id = $1"""


def _device(row: asyncpg.Record) -> DeviceOut:
    return DeviceOut(**dict(row))


@router.get("/devices", response_model=list[DeviceOut], tags=["devices"])
async def list_devices(
    user: CurrentUser,
    request: Request,
    vehicle_id: Annotated[int | None, Query(description="only the device in this vehicle")] = None,
    unassigned: Annotated[bool, Query(description="only devices in no vehicle")] = False,
) -> list[DeviceOut]:
    rows = await _pool(request).fetch(
        _DEVICES
        + " AND ($2::bigint IS NULL OR d.vehicle_id = $2)"
        + " AND (NOT $3 OR d.vehicle_id IS NULL) ORDER BY d.device_id",
        user.tenant_id,
        vehicle_id,
        unassigned,
    )
    return [_device(r) for r in rows]


@router.get("/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
async def get_device(device_id: str, user: CurrentUser, request: Request) -> DeviceOut:
    row = await _pool(request).fetchrow(
        _DEVICES + " AND d.device_id = $2", user.tenant_id, device_id
    )
    if row is None:
        raise _not_found("device", device_id)
    return _device(row)
