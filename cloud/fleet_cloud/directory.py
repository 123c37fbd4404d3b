"""Tenants, users, fleets, vehicles and devices: the records the platform is organised by."""

from __future__ import annotations

import asyncpg
from argon2 import PasswordHasher

from fleet_wire import is_valid_device_id

ROLES = ("owner", "manager", "dispatcher", "viewer", "installer")
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def ensure_tenant(conn: asyncpg.Connection, name: str) -> int:
    tid = await conn.fetchval(
        """INSERT INTO tenants (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
        name,
    )
    return int(tid)


async def ensure_user(
    conn: asyncpg.Connection, tenant_id: int, email: str, password: str, role: str = "owner"
) -> int:
    """Create a user, or reset the password and role of one in the same tenant."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    uid = await conn.fetchval(
        """INSERT INTO users (tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4)
           ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash,
                                             role = EXCLUDED.role
           WHERE users.tenant_id = EXCLUDED.tenant_id
           RETURNING id""",
        tenant_id,
        email.lower(),
        hash_password(password),
        role,
    )
    if uid is None:
        raise ValueError(f"{email.lower()} already belongs to another tenant")
    return int(uid)


async def ensure_fleet(conn: asyncpg.Connection, tenant_id: int, name: str) -> int:
    fid = await conn.fetchval(
        """INSERT INTO fleets (tenant_id, name) VALUES ($1, $2)
           ON CONFLICT (tenant_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
        tenant_id,
        name,
    )
    return int(fid)


async def ensure_vehicle_with_device(
    conn: asyncpg.Connection, tenant_id: int, fleet_id: int | None, name: str, device_id: str
) -> int:
    """Create (or find) a vehicle and the device installed in it; return the vehicle id."""
    if not is_valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    async with conn.transaction():
        vid = await conn.fetchval(
            """INSERT INTO vehicles (tenant_id, fleet_id, name) VALUES ($1, $2, $3)
               ON CONFLICT (tenant_id, name) DO UPDATE SET fleet_id = EXCLUDED.fleet_id
               RETURNING id""",
            tenant_id,
            fleet_id,
            name,
        )
        owner = await conn.fetchval(
            """INSERT INTO devices (device_id, tenant_id, vehicle_id) VALUES ($1, $2, $3)
               ON CONFLICT (device_id) DO UPDATE SET vehicle_id = EXCLUDED.vehicle_id
               WHERE devices.tenant_id = EXCLUDED.tenant_id
               RETURNING tenant_id""",
            device_id,
            tenant_id,
            vid,
        )
        if owner is None:
            raise ValueError(f"device {device_id} belongs to another tenant")
    return int(vid)
