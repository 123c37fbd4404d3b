"""Remote configuration and commands: config layers, each device's desired vs
reported config, staged rollouts, and commands. Every id is scoped to the
caller's tenant (another tenant's is a 404). docs/remote-config.md."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, Principal, require_role
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError
from fleet_cloud.remote_config import commands, desired, layering, rollouts
from fleet_cloud.remote_config.service import RemoteConfigService
from fleet_cloud.remote_config.signing import SigningKeyError
from fleet_cloud.remote_config.validation import ConfigValueError, validate_document
from fleet_wire.remote import CommandKind

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

EDITORS = ("owner", "manager")
READERS = ("owner", "manager", "dispatcher", "viewer")
# Dispatchers may ask where a vehicle is; anything that changes a unit is for editors.
DISPATCHER_COMMANDS = frozenset({"locate"})
Scope = Literal["tenant", "fleet", "device"]
# The column of each scope's unique index (migration 022).
_Db: TypeAlias = asyncpg.Pool | asyncpg.Connection
_LAYER_KEY = {"tenant": "tenant_id", "fleet": "fleet_id", "device": "device_id"}


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _service(request: Request) -> RemoteConfigService:
    svc: RemoteConfigService = request.app.state.remote_config
    return svc


def _key(request: Request) -> bytes:
    try:
        return _service(request).signing_key()
    except SigningKeyError as e:
        raise ApiError(503, "signing_key_missing", str(e)) from None


# -- layers ------------------------------------------------------------------


class LayerIn(BaseModel):
    config: dict[str, Any] = Field(
        description="the whole layer: flat dotted keys (REMOTE_KEYS) to values; {} clears it",
        examples=[{"sampler.min_interval_s": 5, "publisher.drain_rate": 500}],
    )


class LayerOut(BaseModel):
    scope: Scope
    fleet_id: int | None = None
    device_id: str | None = None
    config: dict[str, Any]
    version: int = Field(description="+1 per change of this layer (0: never set)")
    updated_by: int | None = None
    updated_at: datetime | None = None
    devices_updated: int | None = Field(
        default=None, description="on PUT: devices that were issued a new desired version"
    )


async def _layer(conn: _Db, tenant_id: int, scope: Scope, ref: int | str | None) -> LayerOut:
    where = {"tenant": "TRUE", "fleet": "fleet_id = $3", "device": "device_id = $3"}[scope]
    args: list[Any] = [tenant_id, scope] + ([] if scope == "tenant" else [ref])
    row = await conn.fetchrow(
        f"""SELECT document, version, updated_by, updated_at FROM config_layers
            WHERE tenant_id = $1 AND scope = $2 AND {where}""",
        *args,
    )
    out = LayerOut(
        scope=scope,
        fleet_id=ref if scope == "fleet" else None,  # type: ignore[arg-type]
        device_id=ref if scope == "device" else None,  # type: ignore[arg-type]
        config={},
        version=0,
    )
    if row is not None:
        out.config, out.version = row["document"], row["version"]
        out.updated_by, out.updated_at = row["updated_by"], row["updated_at"]
    return out


async def _own_fleet(pool: _Db, fleet_id: int, user: Principal) -> None:
    owner = await pool.fetchval("SELECT tenant_id FROM fleets WHERE id = $1", fleet_id)
    if owner != user.tenant_id:
        raise ApiError(404, "not_found", f"fleet {fleet_id} not found")


async def _own_device(pool: _Db, device_id: str, user: Principal) -> None:
    owner = await pool.fetchval("SELECT tenant_id FROM devices WHERE device_id = $1", device_id)
    if owner != user.tenant_id:
        raise ApiError(404, "not_found", f"device {device_id} not found")


def _valid(doc: dict[str, Any], field: str = "config") -> dict[str, Any]:
    try:
        return validate_document(doc)
    except ConfigValueError as e:
        raise ApiError(422, "invalid_config", str(e), f"{field}.{e.key}") from None


async def _put_layer(
    request: Request, user: Principal, scope: Scope, ref: int | str | None, body: LayerIn
) -> LayerOut:
    doc = _valid(body.config)
    key = _key(request)
    target = _LAYER_KEY[scope]
    pool = _pool(request)
    async with pool.acquire() as conn, conn.transaction():
        await desired.lock(conn)
        await conn.execute(
            f"""INSERT INTO config_layers (tenant_id, scope, fleet_id, device_id, document,
                                           updated_by)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT ({target}) WHERE scope = '{scope}'
                DO UPDATE SET document = EXCLUDED.document, updated_by = EXCLUDED.updated_by,
                              version = config_layers.version + 1, updated_at = now()""",
            user.tenant_id,
            scope,
            ref if scope == "fleet" else None,
            ref if scope == "device" else None,
            doc,
            user.user_id,
        )
        if scope == "tenant":
            devices = await layering.devices_of_tenant(conn, user.tenant_id)
        elif scope == "fleet":
            devices = await layering.devices_in_fleet(conn, int(ref))  # type: ignore[arg-type]
        else:
            devices = [str(ref)]
        try:
            issued = await desired.recompute(conn, key, devices)
        except desired.DeviceConfigError as e:
            raise ApiError(422, "invalid_config", str(e), f"config.{e.key}") from None
        out = await _layer(conn, user.tenant_id, scope, ref)
    _service(request).kick()
    out.devices_updated = len(issued)
    return out


@router.get("/config/tenant", response_model=LayerOut, tags=["config"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def get_tenant_layer(user: CurrentUser, request: Request) -> LayerOut:
    return await _layer(_pool(request), user.tenant_id, "tenant", None)


@router.put("/config/tenant", response_model=LayerOut, tags=["config"],
            dependencies=[require_role(*EDITORS)])  # fmt: skip
async def put_tenant_layer(body: LayerIn, user: CurrentUser, request: Request) -> LayerOut:
    """Replace the tenant-wide layer (the weakest: fleets and devices override it)."""
    return await _put_layer(request, user, "tenant", None, body)


@router.get("/config/fleets/{fleet_id}", response_model=LayerOut, tags=["config"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def get_fleet_layer(fleet_id: int, user: CurrentUser, request: Request) -> LayerOut:
    await _own_fleet(_pool(request), fleet_id, user)
    return await _layer(_pool(request), user.tenant_id, "fleet", fleet_id)


@router.put("/config/fleets/{fleet_id}", response_model=LayerOut, tags=["config"],
            dependencies=[require_role(*EDITORS)])  # fmt: skip
async def put_fleet_layer(
    fleet_id: int, body: LayerIn, user: CurrentUser, request: Request
) -> LayerOut:
    """Replace a fleet's layer at once (no canaries: use a rollout for that)."""
    await _own_fleet(_pool(request), fleet_id, user)
    return await _put_layer(request, user, "fleet", fleet_id, body)


@router.get("/config/devices/{device_id}", response_model=LayerOut, tags=["config"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def get_device_layer(device_id: str, user: CurrentUser, request: Request) -> LayerOut:
    await _own_device(_pool(request), device_id, user)
    return await _layer(_pool(request), user.tenant_id, "device", device_id)


@router.put("/config/devices/{device_id}", response_model=LayerOut, tags=["config"],
            dependencies=[require_role(*EDITORS)])  # fmt: skip
async def put_device_layer(
    device_id: str, body: LayerIn, user: CurrentUser, request: Request
) -> LayerOut:
    """Replace one device's own layer (the strongest)."""
    await _own_device(_pool(request), device_id, user)
    return await _put_layer(request, user, "device", device_id, body)


# -- one device: desired vs reported -------------------------------------------


class DesiredOut(BaseModel):
    version: int
    config: dict[str, Any]
    issued_at: int = Field(description="UTC ms")
    published: bool = Field(description="the broker holds this version (retained)")
    published_at: datetime | None


class ReportedOut(BaseModel):
    version: int
    status: Literal["applied", "rejected", "reverted"]
    reason: str | None
    active_version: int
    reported_at: datetime
    received_at: datetime


class DeviceConfigOut(BaseModel):
    device_id: str
    desired: DesiredOut | None
    reported: ReportedOut | None
    in_sync: bool = Field(description="the device runs the desired version")


@router.get("/devices/{device_id}/config", response_model=DeviceConfigOut, tags=["config"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def device_config(device_id: str, user: CurrentUser, request: Request) -> DeviceConfigOut:
    pool = _pool(request)
    await _own_device(pool, device_id, user)
    d = await pool.fetchrow("SELECT * FROM device_config_desired WHERE device_id = $1", device_id)
    r = await pool.fetchrow("SELECT * FROM device_config_reported WHERE device_id = $1", device_id)
    des = None
    if d is not None:
        des = DesiredOut(
            version=d["version"],
            config=d["document"],
            issued_at=d["issued_at"],
            published=d["published_version"] >= d["version"],
            published_at=d["published_at"],
        )
    rep = ReportedOut(**{k: r[k] for k in ReportedOut.model_fields}) if r is not None else None
    in_sync = des is None or (rep is not None and rep.active_version == des.version)
    return DeviceConfigOut(device_id=device_id, desired=des, reported=rep, in_sync=in_sync)


# -- rollouts ----------------------------------------------------------------


class RolloutIn(BaseModel):
    fleet_id: int | None = Field(None, description="the fleet (or give fleet_name)")
    fleet_name: str | None = None
    set: dict[str, Any] = Field(min_length=1, description="dotted keys to values to change")
    canary_percent: Annotated[float, Field(gt=0, le=100)] = 10.0
    max_failures_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    wait_s: Annotated[int, Field(ge=5, le=7 * 86400)] = 300


class RolloutMember(BaseModel):
    device_id: str
    phase: Literal["canary", "rest"]
    version: int | None
    result: (
        Literal["applied", "rejected", "reverted", "no_answer", "unchanged", "cancelled"] | None
    ) = Field(description="None: waiting (or, without a version, not issued)")
    reason: str | None
    answered_at: datetime | None


class RolloutOut(BaseModel):
    id: int
    fleet_id: int
    changes: dict[str, Any]
    state: Literal["canary", "waiting", "proceeding", "done", "aborted"]
    reason: str | None
    canary_percent: float
    max_failures_percent: float
    wait_s: int
    devices_total: int = Field(description="devices whose config the change alters")
    canary_count: int
    applied_count: int
    failed_count: int
    pending_count: int
    created_by: int | None
    created_at: datetime
    phase_started_at: datetime | None
    finished_at: datetime | None
    members: list[RolloutMember]


async def _rollout_out(conn: asyncpg.Connection, rid: int, user: Principal) -> RolloutOut:
    v = await rollouts.view(conn, rid)
    if v is None or v["tenant_id"] != user.tenant_id:
        raise ApiError(404, "not_found", f"rollout {rid} not found")
    return RolloutOut(**v)


@router.post("/config/rollouts", response_model=RolloutOut, status_code=201, tags=["config"],
             dependencies=[require_role(*EDITORS)])  # fmt: skip
async def create_rollout(body: RolloutIn, user: CurrentUser, request: Request) -> RolloutOut:
    """Stage a change to a fleet: canaries first, then the rest, or abort on failures."""
    pool = _pool(request)
    if (body.fleet_id is None) == (body.fleet_name is None):
        raise ApiError(422, "invalid_request", "give one of fleet_id, fleet_name", "fleet_id")
    fleet_id = body.fleet_id
    if fleet_id is None:
        fleet_id = await pool.fetchval(
            "SELECT id FROM fleets WHERE tenant_id = $1 AND name = $2", user.tenant_id,
            body.fleet_name,
        )  # fmt: skip
        if fleet_id is None:
            raise ApiError(404, "not_found", f"fleet {body.fleet_name!r} not found", "fleet_name")
    await _own_fleet(pool, fleet_id, user)
    changes = _valid(body.set, "set")
    key = _key(request)
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                rid = await rollouts.create(
                    conn, key, tenant_id=user.tenant_id, fleet_id=fleet_id, changes=changes,
                    canary_percent=body.canary_percent,
                    max_failures_percent=body.max_failures_percent, wait_s=body.wait_s,
                    created_by=user.user_id,
                )  # fmt: skip
        except rollouts.RolloutError as e:
            raise ApiError(e.status, e.code, e.message, e.field) from None
        except desired.DeviceConfigError as e:
            raise ApiError(422, "invalid_config", str(e), f"set.{e.key}") from None
        async with conn.transaction():
            await rollouts.step(conn, key, rid)  # issue the canaries now, not at the next tick
        out = await _rollout_out(conn, rid, user)
    _service(request).kick()
    return out


@router.get("/config/rollouts", response_model=list[RolloutOut], tags=["config"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def list_rollouts(
    user: CurrentUser,
    request: Request,
    fleet_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[RolloutOut]:
    async with _pool(request).acquire() as conn:
        ids = await conn.fetch(
            """SELECT id FROM config_rollouts WHERE tenant_id = $1
               AND ($2::bigint IS NULL OR fleet_id = $2) ORDER BY id DESC LIMIT $3""",
            user.tenant_id,
            fleet_id,
            limit,
        )
        return [await _rollout_out(conn, r["id"], user) for r in ids]


@router.get("/config/rollouts/{rollout_id}", response_model=RolloutOut, tags=["config"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def get_rollout(rollout_id: int, user: CurrentUser, request: Request) -> RolloutOut:
    """Status of a rollout and every member's result."""
    async with _pool(request).acquire() as conn:
        return await _rollout_out(conn, rollout_id, user)


@router.post("/config/rollouts/{rollout_id}/abort", response_model=RolloutOut, tags=["config"],
             dependencies=[require_role(*EDITORS)])  # fmt: skip
async def abort_rollout(rollout_id: int, user: CurrentUser, request: Request) -> RolloutOut:
    """Stop a running rollout: devices that got the change are given their previous config."""
    key = _key(request)
    async with _pool(request).acquire() as conn:
        await _rollout_out(conn, rollout_id, user)  # 404 for another tenant's
        async with conn.transaction():
            stopped = await rollouts.abort(conn, key, rollout_id, f"aborted by {user.email}")
        out = await _rollout_out(conn, rollout_id, user)
    if not stopped:
        raise ApiError(409, "rollout_finished", f"rollout {rollout_id} is already {out.state}")
    _service(request).kick()
    return out


# -- commands ----------------------------------------------------------------


class CommandIn(BaseModel):
    kind: CommandKind
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="locate, restart, clear_outbox: none; "
        "set_interval: min_interval_s and/or max_interval_s",
    )
    expires_in_s: Annotated[int, Field(ge=commands.EXPIRY_MIN_S, le=commands.EXPIRY_MAX_S)] = (
        commands.EXPIRY_DEFAULT_S
    )
    confirm: bool = Field(False, description="required (true) for clear_outbox")


class CommandOut(BaseModel):
    id: str
    device_id: str
    kind: CommandKind
    args: dict[str, Any]
    status: Literal["pending", "sent", "done", "rejected", "expired", "failed"]
    message: str | None
    result: dict[str, Any] | None
    created_by: int | None
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    answered_at: datetime | None


def _command_out(r: asyncpg.Record) -> CommandOut:
    return CommandOut(**{k: r[k] for k in CommandOut.model_fields})


@router.post("/devices/{device_id}/commands", response_model=CommandOut, status_code=201,
             tags=["commands"], dependencies=[require_role(*EDITORS, "dispatcher")])  # fmt: skip
async def send_command(
    device_id: str, body: CommandIn, user: CurrentUser, request: Request
) -> CommandOut:
    """Send a command now; its result arrives on up/cmd (GET it by id)."""
    if user.role == "dispatcher" and body.kind not in DISPATCHER_COMMANDS:
        allowed = ", ".join(sorted(DISPATCHER_COMMANDS))
        raise ApiError(403, "forbidden", f"role 'dispatcher' may only send {allowed}")
    pool = _pool(request)
    await _own_device(pool, device_id, user)
    if not await pool.fetchval("SELECT enabled FROM devices WHERE device_id = $1", device_id):
        raise ApiError(409, "device_disabled", f"device {device_id} is disabled: enable it first")
    try:
        args = commands.checked_args(body.kind, body.args, body.confirm)
    except commands.CommandArgsError as e:
        raise ApiError(400, "invalid_command", str(e), e.field) from None
    svc = _service(request)
    async with pool.acquire() as conn:
        # Stored before it is published: the answer can arrive within milliseconds.
        row = await commands.create(
            conn, device_id=device_id, tenant_id=user.tenant_id, kind=body.kind, args=args,
            expires_in_s=body.expires_in_s, created_by=user.user_id,
        )  # fmt: skip
        if await svc.publish_command(row):
            await commands.mark_sent(conn, row["id"])
        row = await conn.fetchrow("SELECT * FROM device_commands WHERE id = $1", row["id"])
    assert row is not None
    return _command_out(row)


@router.get("/devices/{device_id}/commands", response_model=list[CommandOut], tags=["commands"],
            dependencies=[require_role(*READERS)])  # fmt: skip
async def list_commands(
    device_id: str,
    user: CurrentUser,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[CommandOut]:
    pool = _pool(request)
    await _own_device(pool, device_id, user)
    rows = await pool.fetch(
        """SELECT * FROM device_commands WHERE device_id = $1
           ORDER BY created_at DESC LIMIT $2""",
        device_id,
        limit,
    )
    return [_command_out(r) for r in rows]


@router.get("/devices/{device_id}/commands/{command_id}", response_model=CommandOut,
            tags=["commands"], dependencies=[require_role(*READERS)])  # fmt: skip
async def get_command(
    device_id: str, command_id: str, user: CurrentUser, request: Request
) -> CommandOut:
    row = await _pool(request).fetchrow(
        "SELECT * FROM device_commands WHERE id = $1 AND device_id = $2 AND tenant_id = $3",
        command_id,
        device_id,
        user.tenant_id,
    )
    if row is None:
        raise ApiError(404, "not_found", f"command {command_id} not found")
    return _command_out(row)
