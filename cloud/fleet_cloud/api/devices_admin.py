"""Disable and enable a device: the cloud stops taking its data and the broker
refuses it (docs/security.md, revocation).

Disabling kicks a connected device at once, refuses its reconnects and clears
its retained messages (status, config, command); its stored data stays.
Owners and managers only; another tenant's device is a 404.
"""

from __future__ import annotations

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser, require_role
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError
from fleet_cloud.broker_admin import BrokerAdmin, BrokerAdminError
from fleet_cloud.registry import DeviceRegistry
from fleet_cloud.settings import Settings

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["devices"])


class DeviceStateOut(BaseModel):
    device_id: str
    enabled: bool
    broker_account: bool = Field(
        description="the device has a broker account (false: it never got MQTT credentials;"
        " only the cloud side was changed)"
    )


async def _set_enabled(request: Request, device_id: str, tenant_id: int, enabled: bool) -> bool:
    pool: asyncpg.Pool = request.app.state.pool
    settings: Settings = request.app.state.settings
    async with pool.acquire() as conn, conn.transaction():
        owner = await conn.fetchval(
            "SELECT tenant_id FROM devices WHERE device_id = $1 FOR UPDATE", device_id
        )
        if owner != tenant_id:
            raise ApiError(404, "not_found", f"device {device_id} not found")
        await conn.execute(
            "UPDATE devices SET enabled = $2 WHERE device_id = $1", device_id, enabled
        )
        # Inside the transaction: if the broker cannot be told, nothing changes
        # (a device the API calls disabled must not still be connected).
        try:
            async with BrokerAdmin.from_settings(settings) as admin:
                if enabled:
                    account = await admin.enable_device(device_id)
                else:
                    account = await admin.disable_device(device_id)
        except BrokerAdminError as e:
            raise ApiError(
                502, "broker_unavailable", f"device {device_id} left unchanged: {e}"
            ) from None
    registry: DeviceRegistry | None = getattr(request.app.state, "registry", None)
    if registry is not None:
        registry.forget(device_id)  # this node's ingest sees it at once
    return account


@router.post("/devices/{device_id}/disable", response_model=DeviceStateOut,
             dependencies=[require_role("owner", "manager")])  # fmt: skip
async def disable_device(device_id: str, user: CurrentUser, request: Request) -> DeviceStateOut:
    """Revoke a device: kicked from the broker now, reconnects refused, retained
    messages cleared, and the cloud drops whatever it still sends (HTTP or MQTT)."""
    account = await _set_enabled(request, device_id, user.tenant_id, False)
    return DeviceStateOut(device_id=device_id, enabled=False, broker_account=account)


@router.post("/devices/{device_id}/enable", response_model=DeviceStateOut,
             dependencies=[require_role("owner", "manager")])  # fmt: skip
async def enable_device(device_id: str, user: CurrentUser, request: Request) -> DeviceStateOut:
    """Let a disabled device back in with its existing credentials."""
    account = await _set_enabled(request, device_id, user.tenant_id, True)
    return DeviceStateOut(device_id=device_id, enabled=True, broker_account=account)
