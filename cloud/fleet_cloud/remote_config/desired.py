"""Each device's desired config: resolved from the layers, versioned, signed.

A device's version grows by exactly one each time its resolved document
changes, whatever caused it (a layer edit, a rollout step, an abort, the
vehicle moving to another fleet); an edit that leaves its document as it was
issues nothing. All recomputes serialise on one transaction-level advisory
lock: config edits are rare, and two concurrent ones must not both sign
version N+1 with different contents.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from fleet_cloud.remote_config.layering import Chain, chains, resolve
from fleet_cloud.remote_config.validation import ConfigValueError, validate_document
from fleet_wire.remote import ConfigDocument, sign

# Any constant works; it only has to be the same for every process.
RECOMPUTE_LOCK = 0x636F6E666967  # "config"


class DeviceConfigError(ConfigValueError):
    """A resolved document that the device's agent would refuse."""

    def __init__(self, device_id: str, err: ConfigValueError) -> None:
        super().__init__(err.key, f"{err.message} (in the resolved config of device {device_id})")
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class Issued:
    device_id: str
    version: int


async def lock(conn: asyncpg.Connection) -> None:
    """Serialise recomputes (call inside the caller's transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", RECOMPUTE_LOCK)


def checked(device_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_document(doc)
    except ConfigValueError as e:
        raise DeviceConfigError(device_id, e) from None


async def recompute(
    conn: asyncpg.Connection, key: bytes, device_ids: list[str]
) -> dict[str, Issued]:
    """Issue a new signed version to each device whose resolved document changed.

    Call inside a transaction; raises DeviceConfigError (nothing is issued then,
    the caller's transaction rolls back) when a resolved document is invalid.
    Returns what was issued, by device.
    """
    if not device_ids:
        return {}
    await lock(conn)
    by_device: dict[str, Chain] = await chains(conn, device_ids)
    current = {
        r["device_id"]: r
        for r in await conn.fetch(
            """SELECT device_id, version, document FROM device_config_desired
               WHERE device_id = ANY($1::text[]) FOR UPDATE""",
            list(by_device),
        )
    }
    issued: dict[str, Issued] = {}
    now_ms = int(time.time() * 1000)
    for device_id, chain in by_device.items():
        doc = checked(device_id, resolve(chain))
        cur = current.get(device_id)
        if cur is None and not doc:
            continue  # never configured remotely: the provisioned file rules
        if cur is not None and cur["document"] == doc:
            continue
        version = 1 if cur is None else int(cur["version"]) + 1
        # Sign the document as jsonb will hand it back (1e20 comes back an
        # integer), so the published bytes always match the signature.
        doc = await conn.fetchval("SELECT $1::jsonb", doc)
        sig = sign(key, device_id, version, now_ms, doc)
        await conn.execute(
            """INSERT INTO device_config_desired
                   (device_id, version, document, signature, issued_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (device_id) DO UPDATE SET version = EXCLUDED.version,
                   document = EXCLUDED.document, signature = EXCLUDED.signature,
                   issued_at = EXCLUDED.issued_at""",
            device_id,
            version,
            doc,
            sig,
            now_ms,
        )
        issued[device_id] = Issued(device_id, version)
    return issued


def document(row: asyncpg.Record) -> ConfigDocument:
    """The wire document of a device_config_desired row (exactly what was signed)."""
    return ConfigDocument(
        device_id=row["device_id"],
        version=int(row["version"]),
        issued_at=int(row["issued_at"]),
        config=row["document"],
        sig=row["signature"],
    )
