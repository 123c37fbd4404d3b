"""What devices answer on up/config and up/cmd, stored as ingest receives it.

Ingest calls ``store`` for these two kinds (a few messages per device per
change, not a stream), so each is written at once in its own transaction
rather than riding the telemetry batches. A message that cannot be used comes
back as (reason, detail) for ingest's dead-letter table.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from fleet_wire import Up, WireError, decode_model
from fleet_wire.remote import CommandResult, ConfigReport

Problem = tuple[str, str]  # (dead-letter reason, detail)


async def store(
    pool: asyncpg.Pool, device_id: str, kind: Up, raw: bytes, content_type: str | None
) -> Problem | None:
    try:
        if kind is Up.CONFIG:
            report = decode_model(raw, ConfigReport, content_type)
        else:
            result = decode_model(raw, CommandResult, content_type)
    except WireError as e:
        return e.reason, e.detail
    try:
        async with pool.acquire() as conn, conn.transaction():
            if kind is Up.CONFIG:
                return await _config_report(conn, device_id, report)
            return await _command_result(conn, device_id, result)
    except asyncpg.DataError as e:
        # Valid JSON PostgreSQL will not store (a NUL character in a string):
        # dead-letter it; the caller retries only outages, and must not retry this.
        return "unstorable", str(e)


async def _config_report(
    conn: asyncpg.Connection, device_id: str, r: ConfigReport
) -> Problem | None:
    at = datetime.fromtimestamp(r.t / 1000, UTC)
    # Versions only grow, so a report about an older version than the stored
    # one is stale (a redelivery after a reconnect). Not the device's clock:
    # a Pi without a real-time clock may boot with a wrong one.
    await conn.execute(
        """INSERT INTO device_config_reported
               (device_id, version, status, reason, active_version, reported_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (device_id) DO UPDATE SET version = EXCLUDED.version,
               status = EXCLUDED.status, reason = EXCLUDED.reason,
               active_version = EXCLUDED.active_version, reported_at = EXCLUDED.reported_at,
               received_at = now()
           WHERE device_config_reported.version <= EXCLUDED.version""",
        device_id,
        r.version,
        r.status,
        r.reason,
        r.active_version,
        at,
    )
    # A rollout member counts a report on its version or a later one (a later
    # version still carries the rollout's change while the rollout runs). A
    # revert overrides an earlier "applied": the change did not hold.
    await conn.execute(
        """UPDATE config_rollout_members m SET result = $3, reason = $4, answered_at = now()
           FROM config_rollouts r
           WHERE r.id = m.rollout_id AND r.state IN ('waiting', 'proceeding')
             AND m.device_id = $1 AND m.version IS NOT NULL AND m.version <= $2
             AND (m.result IS NULL OR ($3 = 'reverted' AND m.result = 'applied'))""",
        device_id,
        r.version,
        r.status,
        r.reason,
    )
    return None


async def _command_result(
    conn: asyncpg.Connection, device_id: str, r: CommandResult
) -> Problem | None:
    row = await conn.fetchrow(
        "SELECT answered_at FROM device_commands WHERE id = $1 AND device_id = $2 FOR UPDATE",
        r.id,
        device_id,
    )
    if row is None:
        return "unknown_command", f"no command {r.id!r} was sent to {device_id}"
    if row["answered_at"] is not None:
        return None  # a QoS 1 redelivery of an answer already stored
    # Also over a cloud-side 'expired': a late answer is still the device's word.
    await conn.execute(
        """UPDATE device_commands SET status = $2, message = $3, result = $4,
               answered_at = now() WHERE id = $1""",
        r.id,
        r.status,
        r.message,
        r.result,
    )
    return None
