"""Provisioning: one-time claim tokens for a vehicle, redeemed by the unit itself.

A manager or the installer creates a claim for a vehicle (``POST
/vehicles/{id}/claims``) and gets a token, shown once. On the unit, ``fleet-agent
provision`` posts the token with the unit's install id to ``/provision`` (no user
login: the token is the credential) and receives its device id, fresh broker
credentials, the CA, the config public key and its initial config.

Rules a redemption follows (docs/provisioning.md):
- unknown token: 404, counted by a per-IP failure limiter (429 past it);
- revoked or expired: 410;
- already used by another unit (another install id): 409, naming the date;
- used by the same unit and not expired: served again with a new password
  (re-running the installer's command is safe: same device, fresh credentials).
The device row is written and the claim marked used in one transaction; the
broker account is set inside it, so a broker failure leaves the claim unused.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, require_role, sha256
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from fleet_cloud.api.ratelimit import FailureLimiter
from fleet_cloud.api.scoping import own_vehicle
from fleet_cloud.settings import Settings
from fleet_wire import is_valid_device_id
from fleet_wire.topics import DEVICE_ID_PATTERN

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

CLAIM_PREFIX = "fct_"  # recognisable in logs and secret scanners
# Installers commission units on site, often with nobody at a desk: they may
# create and revoke claims (of their own tenant's vehicles) as managers do.
CLAIM_ROLES = ("owner", "manager", "installer")
MIN_TTL_S = 5 * 60
MAX_TTL_S = 7 * 86400
DEFAULT_TTL_S = 2 * 3600
INSTALL_ID = r"^[A-Za-z0-9_-]{16,64}$"
BROKER_TIMEOUT_S = 20.0


# -- claims (managers, installers) ----------------------------------------------


class ClaimIn(BaseModel):
    ttl_s: Annotated[int, Field(ge=MIN_TTL_S, le=MAX_TTL_S)] = Field(
        DEFAULT_TTL_S, description="seconds the token stays redeemable (5 min to 7 days)"
    )
    device_id: Annotated[str | None, Field(pattern=DEVICE_ID_PATTERN)] = Field(
        None,
        description="device id to issue; default: the vehicle's current device, "
        "else one derived from the vehicle's name",
    )


class ClaimOut(BaseModel):
    id: int
    vehicle_id: int
    device_id: str | None = Field(description="requested at creation, or issued on use")
    status: Literal["pending", "used", "expired", "revoked"]
    created_by: str | None = Field(description="email of the user who created it")
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None = Field(description="install id of the unit that redeemed it")
    used_hostname: str | None
    used_agent: str | None = Field(description="agent version of the unit that redeemed it")


class ClaimCreated(ClaimOut):
    token: str = Field(description="the claim token; shown only now, never stored in clear")


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


_CLAIM_COLUMNS = """
SELECT c.*, u.email AS creator FROM device_claims c LEFT JOIN users u ON u.id = c.created_by
"""


def _claim_out(r: asyncpg.Record, now: datetime) -> dict[str, Any]:
    status = (
        "used" if r["used_at"] is not None
        else "revoked" if r["revoked_at"] is not None
        else "expired" if r["expires_at"] <= now
        else "pending"
    )  # fmt: skip
    return {
        **{k: r[k] for k in ClaimOut.model_fields if k not in ("status", "created_by")},
        "status": status,
        "created_by": r["creator"],
    }


async def _check_requested_device(
    conn: asyncpg.Connection, tenant_id: int, vehicle_id: int, device_id: str
) -> None:
    """A requested id must be free, or already this vehicle's device."""
    row = await conn.fetchrow(
        "SELECT tenant_id, vehicle_id FROM devices WHERE device_id = $1", device_id
    )
    current = await conn.fetchval("SELECT device_id FROM devices WHERE vehicle_id = $1", vehicle_id)
    if row is not None and (row["tenant_id"] != tenant_id or row["vehicle_id"] != vehicle_id):
        raise ApiError(409, "conflict", f"device id {device_id} is in use", "device_id")
    if current is not None and current != device_id:
        raise ApiError(
            409,
            "conflict",
            f"vehicle {vehicle_id} has device {current}: a new unit takes over that id",
            "device_id",
        )


@router.post(
    "/vehicles/{vehicle_id}/claims",
    response_model=ClaimCreated,
    status_code=201,
    tags=["provisioning"],
    dependencies=[require_role(*CLAIM_ROLES)],
)
async def create_claim(
    vehicle_id: int, user: CurrentUser, request: Request, body: ClaimIn | None = None
) -> ClaimCreated:
    """A one-time claim token for the vehicle: give it to `fleet-agent provision --token`."""
    body = body or ClaimIn.model_validate({})
    pool = _pool(request)
    await own_vehicle(pool, vehicle_id, user)
    token = CLAIM_PREFIX + secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        if body.device_id is not None:
            await _check_requested_device(conn, user.tenant_id, vehicle_id, body.device_id)
        claim_id = await conn.fetchval(
            """INSERT INTO device_claims
                   (tenant_id, vehicle_id, token_sha256, device_id, created_by, expires_at)
               VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING id""",
            user.tenant_id,
            vehicle_id,
            sha256(token),
            body.device_id,
            user.user_id,
            float(body.ttl_s),
        )
        row = await conn.fetchrow(_CLAIM_COLUMNS + "WHERE c.id = $1", claim_id)
    assert row is not None
    return ClaimCreated(token=token, **_claim_out(row, datetime.now(UTC)))


@router.get(
    "/vehicles/{vehicle_id}/claims",
    response_model=list[ClaimOut],
    tags=["provisioning"],
    dependencies=[require_role(*CLAIM_ROLES)],
)
async def list_claims(vehicle_id: int, user: CurrentUser, request: Request) -> list[ClaimOut]:
    """The vehicle's claims, newest first (never their tokens)."""
    pool = _pool(request)
    await own_vehicle(pool, vehicle_id, user)
    rows = await pool.fetch(
        _CLAIM_COLUMNS + "WHERE c.vehicle_id = $1 AND c.tenant_id = $2 ORDER BY c.id DESC",
        vehicle_id,
        user.tenant_id,
    )
    now = datetime.now(UTC)
    return [ClaimOut(**_claim_out(r, now)) for r in rows]


@router.get(
    "/claims",
    response_model=list[ClaimOut],
    tags=["provisioning"],
    dependencies=[require_role(*CLAIM_ROLES)],
)
async def list_tenant_claims(
    user: CurrentUser,
    request: Request,
    status: Literal["pending", "used", "expired", "revoked"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ClaimOut]:
    """The tenant's claims, newest first (never their tokens); optionally of one status."""
    rows = await _pool(request).fetch(
        _CLAIM_COLUMNS
        + """WHERE c.tenant_id = $1 AND ($2::text IS NULL OR $2 = CASE
                 WHEN c.used_at IS NOT NULL THEN 'used'
                 WHEN c.revoked_at IS NOT NULL THEN 'revoked'
                 WHEN c.expires_at <= now() THEN 'expired'
                 ELSE 'pending' END)
             ORDER BY c.id DESC LIMIT $3""",
        user.tenant_id,
        status,
        limit,
    )
    now = datetime.now(UTC)
    return [ClaimOut(**_claim_out(r, now)) for r in rows]


@router.delete(
    "/vehicles/{vehicle_id}/claims/{claim_id}",
    status_code=204,
    tags=["provisioning"],
    dependencies=[require_role(*CLAIM_ROLES)],
    responses={409: {"model": ErrorResponse, "description": "The claim was already used"}},
)
async def revoke_claim(
    vehicle_id: int, claim_id: int, user: CurrentUser, request: Request
) -> Response:
    """Revoke an unused claim: its token stops working at once."""
    pool = _pool(request)
    row = await pool.fetchrow(
        """UPDATE device_claims SET revoked_at = coalesce(revoked_at, now())
           WHERE id = $1 AND vehicle_id = $2 AND tenant_id = $3 AND used_at IS NULL
           RETURNING id""",
        claim_id,
        vehicle_id,
        user.tenant_id,
    )
    if row is None:
        used = await pool.fetchval(
            """SELECT used_at FROM device_claims
               WHERE id = $1 AND vehicle_id = $2 AND tenant_id = $3""",
            claim_id,
            vehicle_id,
            user.tenant_id,
        )
        if used is None:
            raise ApiError(404, "not_found", f"claim {claim_id} not found")
        raise ApiError(
            409,
            "in_use",
            f"claim {claim_id} was used on {_day(used)}: disable the device instead",
        )
    return Response(status_code=204)


# -- redemption (the unit) --------------------------------------------------------


class ProvisionIn(BaseModel):
    token: Annotated[str, Field(min_length=1, max_length=200)]
    install_id: Annotated[str, Field(pattern=INSTALL_ID)] = Field(
        description="random id the unit generated once and keeps in its state directory"
    )
    hostname: Annotated[str | None, Field(max_length=253)] = None
    agent_version: Annotated[str | None, Field(max_length=64)] = None


class MqttAccess(BaseModel):
    host: str
    port: int = Field(description="plain MQTT port")
    tls_port: int | None = Field(description="MQTT over TLS; null when the broker offers none")
    username: str = Field(description="= client id = device id")
    password: str = Field(description="fresh on every redemption; the previous one stops working")
    ca_pem: str | None = Field(description="CA that signed the broker's certificate (PEM)")


class ProvisionOut(BaseModel):
    device_id: str
    vehicle_id: int
    vehicle_name: str
    mqtt: MqttAccess
    config_public_key: str | None = Field(
        description="base64 Ed25519 key that signs remote configs; null: remote config off"
    )
    config: dict[str, Any] = Field(
        description="initial agent config (TOML tables as objects); the unit adds its local "
        "paths and serial ports"
    )


_PROVISION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown claim token"},
    409: {"model": ErrorResponse, "description": "Token already used by another unit"},
    410: {"model": ErrorResponse, "description": "Token expired or revoked"},
    429: {"model": ErrorResponse, "description": "Too many unknown tokens; see Retry-After"},
    503: {"model": ErrorResponse, "description": "Broker or signing key unavailable; retry"},
}


def _limiter(request: Request) -> FailureLimiter:
    lim: FailureLimiter | None = getattr(request.app.state, "provision_limiter", None)
    if lim is None:
        s: Settings = request.app.state.settings
        lim = request.app.state.provision_limiter = FailureLimiter(
            s.provision_max_failures, s.provision_window_s
        )
    return lim


def _day(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def slug(name: str) -> str:
    """A device-id-shaped rendering of a vehicle name ("Van 42 (Nord)" -> "van-42-nord")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64].rstrip("-")


async def _device_for(conn: asyncpg.Connection, claim: asyncpg.Record) -> str:
    """The vehicle's device (a replacement unit takes its id over), else the claim's
    requested id, else one derived from the vehicle's name that nobody uses."""
    current = await conn.fetchval(
        "SELECT device_id FROM devices WHERE vehicle_id = $1", claim["vehicle_id"]
    )
    if current is not None:
        if claim["device_id"] is not None and claim["device_id"] != current:
            raise ApiError(
                409,
                "conflict",
                f"vehicle now has device {current}, not the {claim['device_id']} this "
                "claim was made for: create a new claim",
            )
        return str(current)
    if claim["device_id"] is not None:
        return str(claim["device_id"])
    base, vid = slug(claim["vehicle_name"]), claim["vehicle_id"]
    candidates = [
        base,
        f"{base[:50]}-{vid}",
        f"vehicle-{vid}",
        f"vehicle-{vid}-{secrets.token_hex(3)}",
    ]
    for cand in candidates:
        if is_valid_device_id(cand) and not await conn.fetchval(
            "SELECT 1 FROM devices WHERE device_id = $1", cand
        ):
            return cand
    raise ApiError(409, "conflict", "no free device id for this vehicle: give one in the claim")


async def _register_device(
    conn: asyncpg.Connection, device_id: str, tenant_id: int, vehicle_id: int
) -> None:
    # A claim is a manager's (or installer's) explicit act for this vehicle, so
    # a unit it brings in is enabled even if the id had been disabled before.
    owner = await conn.fetchval(
        """INSERT INTO devices (device_id, tenant_id, vehicle_id) VALUES ($1, $2, $3)
           ON CONFLICT (device_id) DO UPDATE SET vehicle_id = EXCLUDED.vehicle_id, enabled = true
           WHERE devices.tenant_id = EXCLUDED.tenant_id
           RETURNING tenant_id""",
        device_id,
        tenant_id,
        vehicle_id,
    )
    if owner is None:
        raise ApiError(409, "conflict", f"device id {device_id} belongs to another tenant")


def _public_key(settings: Settings) -> str | None:
    if settings.config_signing_key_file is None:
        log.warning("provisioning without a config signing key: the unit will refuse remote config")
        return None
    from fleet_cloud.remote_config.signing import SigningKeyError, config_public_key

    try:
        return config_public_key(settings)
    except SigningKeyError as e:
        raise ApiError(503, "signing_key_unavailable", str(e)) from None


def _ca_pem(settings: Settings) -> str | None:
    if settings.broker_ca_file is None:
        return None
    try:
        return settings.broker_ca_file.read_text()
    except OSError as e:
        log.error("broker CA %s unreadable: %s", settings.broker_ca_file, e)
        raise ApiError(503, "ca_unavailable", "the broker's CA file is unreadable") from None


async def _set_broker_password(settings: Settings, device_id: str, password: str) -> None:
    from fleet_cloud.broker_admin import BrokerAdmin

    try:
        # Bounded: the claim's and the vehicle's rows stay locked meanwhile.
        async with asyncio.timeout(BROKER_TIMEOUT_S), BrokerAdmin.from_settings(settings) as admin:
            await admin.ensure_device(device_id, password)
    except Exception as e:  # any broker failure: the claim stays unused, the unit retries
        log.error("provisioning %s: broker account not set: %s", device_id, e)
        raise ApiError(
            503, "broker_unavailable", "the broker did not take the account; retry"
        ) from None


def _initial_config(
    settings: Settings, device_id: str, public_key: str | None, tls: bool
) -> dict[str, Any]:
    host = settings.public_mqtt_host or settings.mqtt_host
    port = settings.public_mqtt_tls_port if tls else settings.public_mqtt_port or settings.mqtt_port
    cfg: dict[str, Any] = {
        "device_id": device_id,
        "broker": {"host": host, "port": port, "tls": tls},
    }
    if public_key is not None:
        cfg["remote"] = {"public_key": public_key}
    return cfg


_REDEEM = """
SELECT c.*, v.name AS vehicle_name FROM device_claims c JOIN vehicles v ON v.id = c.vehicle_id
WHERE c.token_sha256 = $1
FOR UPDATE OF c FOR NO KEY UPDATE OF v"""  # one redemption per claim, then per vehicle


@router.post(
    "/provision", response_model=ProvisionOut, tags=["provisioning"], responses=_PROVISION_ERRORS
)
async def provision(body: ProvisionIn, request: Request) -> ProvisionOut:
    """Redeem a claim token (the unit calls this; no user login). Safe to repeat from the
    same install id while the token has not expired."""
    settings: Settings = request.app.state.settings
    key = (request.client.host if request.client else "", "provision")
    limiter = _limiter(request)
    wait = limiter.retry_after(key)
    if wait:
        err = ApiError(
            429, "too_many_attempts", f"too many unknown claim tokens; retry in {wait} s"
        )
        err.headers = {"Retry-After": str(wait)}
        raise err
    digest = sha256(body.token)
    # Checked before the transaction, so a misconfigured cloud consumes no claim.
    public_key = _public_key(settings)
    ca_pem = _ca_pem(settings)
    tls = settings.public_mqtt_tls_port is not None and ca_pem is not None
    password = secrets.token_urlsafe(24)
    async with _pool(request).acquire() as conn, conn.transaction():
        claim = await conn.fetchrow(_REDEEM, digest)
        # The lookup is by hash, so its timing says nothing about the token; the
        # explicit compare keeps a truncated or colliding index match out.
        if claim is None or not hmac.compare_digest(bytes(claim["token_sha256"]), digest):
            limiter.failed(key)
            raise ApiError(
                404, "unknown_claim", "unknown claim token: check it, or ask for a new one"
            )
        now = datetime.now(UTC)
        if claim["revoked_at"] is not None:
            raise ApiError(
                410, "claim_revoked", f"claim token was revoked on {_day(claim['revoked_at'])}"
            )
        if claim["used_by"] is not None and claim["used_by"] != body.install_id:
            raise ApiError(
                409,
                "claim_used",
                f"claim token already used on {_day(claim['used_at'])} by another unit"
                f"{' (' + claim['used_hostname'] + ')' if claim['used_hostname'] else ''}: "
                "ask for a new claim",
            )
        if claim["expires_at"] <= now:
            raise ApiError(
                410, "claim_expired", f"claim token expired on {_day(claim['expires_at'])}"
            )
        device_id = await _device_for(conn, claim)
        await _register_device(conn, device_id, claim["tenant_id"], claim["vehicle_id"])
        await conn.execute(
            """UPDATE device_claims SET used_at = coalesce(used_at, now()), used_by = $2,
                   used_hostname = $3, used_agent = $4, device_id = $5
               WHERE id = $1""",
            claim["id"],
            body.install_id,
            body.hostname,
            body.agent_version,
            device_id,
        )
        await _set_broker_password(settings, device_id, password)
    # No limiter.succeeded() here: a unit re-running its own token must not
    # reset the count of the unknown tokens tried from its address.
    registry = getattr(request.app.state, "registry", None)
    if registry is not None:  # ingest must see the new device (or its new vehicle) now
        registry.forget(device_id)
    log.info(
        "claim %d redeemed: device %s for vehicle %d by install %s",
        claim["id"], device_id, claim["vehicle_id"], body.install_id,
    )  # fmt: skip
    return ProvisionOut(
        device_id=device_id,
        vehicle_id=claim["vehicle_id"],
        vehicle_name=claim["vehicle_name"],
        mqtt=MqttAccess(
            host=settings.public_mqtt_host or settings.mqtt_host,
            port=settings.public_mqtt_port or settings.mqtt_port,
            tls_port=settings.public_mqtt_tls_port if tls else None,
            username=device_id,
            password=password,
            ca_pem=ca_pem,
        ),
        config_public_key=public_key,
        config=_initial_config(settings, device_id, public_key, tls),
    )
