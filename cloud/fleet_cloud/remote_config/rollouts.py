"""Staged rollouts of a change to one fleet: canaries, then the rest, or abort.

States (all in config_rollouts, so a restarted process carries on where the
last one stopped):

- ``canary``: created; the canaries are chosen (members with phase canary).
  The next step issues their configs.
- ``waiting``: canary configs issued; waiting for their up/config reports.
  Failures (rejected, reverted, no answer within wait_s) above
  max_failures_percent of the canaries abort at once; when every canary has
  answered (or wait_s passed) within the threshold, the rollout proceeds.
- ``proceeding``: the change is issued to every other member; waiting up to
  wait_s for their reports, which are recorded but do not roll back the fleet
  (a vehicle parked with no signal must not undo a change the canaries proved).
- ``done``: the change is merged into the fleet's layer; the staged copy stops
  applying, which changes no device's document (layering.py).
- ``aborted``: the staged change stops applying, so the canaries are issued a
  new version whose content is their previous config (versions never go back).

The change is staged as a layer right after the fleet's own (layering.py)
rather than written as device overrides, so nothing is left behind on the
devices' layers by an abort, and a device or sub-fleet override keeps winning
during the rollout exactly as it will afterwards.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from fleet_cloud.remote_config import desired, layering
from fleet_cloud.remote_config.layering import Doc

FAILED = ("rejected", "reverted", "no_answer")


class RolloutError(ValueError):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


async def create(
    conn: asyncpg.Connection,
    key: bytes,
    *,
    tenant_id: int,
    fleet_id: int,
    changes: Doc,
    canary_percent: float,
    max_failures_percent: float,
    wait_s: int,
    created_by: int | None,
) -> int:
    """Choose the canaries and store the rollout in state canary (inside a transaction)."""
    await desired.lock(conn)
    busy = await conn.fetchval(
        "SELECT id FROM config_rollouts WHERE fleet_id = $1 AND state = ANY($2::text[])",
        fleet_id,
        list(layering.ACTIVE_STATES),
    )
    if busy is not None:
        msg = f"rollout {busy} is still running on this fleet"
        raise RolloutError(409, "rollout_in_progress", msg, "fleet_id")
    devices = await layering.devices_in_fleet(conn, fleet_id)
    by_device = await layering.chains(conn, devices)
    affected: list[str] = []
    for dev, chain in by_device.items():
        after = layering.resolve(chain, (fleet_id, changes))
        if after != layering.resolve(chain):
            desired.checked(dev, after)  # refuse now what an agent would refuse later
            affected.append(dev)
    rid = await conn.fetchval(
        """INSERT INTO config_rollouts (tenant_id, fleet_id, changes, canary_percent,
               max_failures_percent, wait_s, created_by, devices_total)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
        tenant_id,
        fleet_id,
        changes,
        canary_percent,
        max_failures_percent,
        wait_s,
        created_by,
        len(affected),
    )
    unchanged = sorted(set(by_device) - set(affected))
    await conn.executemany(
        """INSERT INTO config_rollout_members (rollout_id, device_id, phase, result)
           VALUES ($1, $2, 'rest', 'unchanged')""",
        [(rid, d) for d in unchanged],
    )
    if not affected:
        await _finish(conn, key, rid, fleet_id, changes, "done", "no device's config changes")
        return int(rid)
    # Online devices first (a canary that cannot answer proves nothing), then a
    # stable pseudo-random order so canaries are not always the same vehicles.
    order = await conn.fetch(
        """SELECT d.device_id FROM unnest($1::text[]) AS d(device_id)
           LEFT JOIN device_status s ON s.device_id = d.device_id
           ORDER BY coalesce(s.online, false) DESC, md5(d.device_id || $2::text)""",
        affected,
        str(rid),
    )
    n_canary = max(1, math.ceil(len(affected) * canary_percent / 100))
    await conn.executemany(
        """INSERT INTO config_rollout_members (rollout_id, device_id, phase)
           VALUES ($1, $2, $3)""",
        [(rid, r["device_id"], "canary" if i < n_canary else "rest") for i, r in enumerate(order)],
    )
    await conn.execute("UPDATE config_rollouts SET canary_count = $2 WHERE id = $1", rid, n_canary)
    return int(rid)


async def active_ids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM config_rollouts WHERE state = ANY($1::text[]) ORDER BY id",
        list(layering.ACTIVE_STATES),
    )
    return [r["id"] for r in rows]


async def step(conn: asyncpg.Connection, key: bytes, rollout_id: int) -> str:
    """Advance one rollout as far as it can go now (inside a transaction); returns its state."""
    await desired.lock(conn)
    r = await conn.fetchrow("SELECT * FROM config_rollouts WHERE id = $1 FOR UPDATE", rollout_id)
    if r is None or r["state"] not in layering.ACTIVE_STATES:
        return "gone" if r is None else str(r["state"])
    state = str(r["state"])
    now = datetime.now(UTC)
    if state == "canary":
        await _issue(conn, key, rollout_id, "canary")
        await _set_state(conn, rollout_id, "waiting")
        return "waiting"
    phase = "canary" if state == "waiting" else "rest"
    deadline = r["phase_started_at"] + timedelta(seconds=r["wait_s"])
    members = await conn.fetch(
        """SELECT device_id, result FROM config_rollout_members
           WHERE rollout_id = $1 AND phase = $2 AND result IS DISTINCT FROM 'unchanged'""",
        rollout_id,
        phase,
    )
    open_ = [m["device_id"] for m in members if m["result"] is None]
    if open_ and now >= deadline:
        await conn.execute(
            """UPDATE config_rollout_members SET result = 'no_answer',
                   reason = 'no report within the wait'
               WHERE rollout_id = $1 AND device_id = ANY($2::text[]) AND result IS NULL""",
            rollout_id,
            open_,
        )
        open_ = []
    await _count(conn, rollout_id)
    if phase == "canary":
        failed = await conn.fetchval(
            """SELECT count(*) FROM config_rollout_members
               WHERE rollout_id = $1 AND phase = 'canary' AND result = ANY($2::text[])""",
            rollout_id,
            list(FAILED),
        )
        allowed = r["max_failures_percent"] / 100 * len(members)
        if failed > allowed:
            why = (f"{failed} of {len(members)} canaries failed "
                   f"(more than {r['max_failures_percent']:g}%)")  # fmt: skip
            await _finish(conn, key, rollout_id, r["fleet_id"], r["changes"], "aborted", why)
            return "aborted"
        if open_:
            return "waiting"
        await _issue(conn, key, rollout_id, "rest", new_state="proceeding")
        return "proceeding"
    if open_:
        return "proceeding"
    await _finish(conn, key, rollout_id, r["fleet_id"], r["changes"], "done", None)
    return "done"


async def abort(conn: asyncpg.Connection, key: bytes, rollout_id: int, why: str) -> bool:
    """Abort a running rollout by hand (inside a transaction); False if it is not running."""
    await desired.lock(conn)
    r = await conn.fetchrow("SELECT * FROM config_rollouts WHERE id = $1 FOR UPDATE", rollout_id)
    if r is None or r["state"] not in layering.ACTIVE_STATES:
        return False
    await _finish(conn, key, rollout_id, r["fleet_id"], r["changes"], "aborted", why)
    return True


async def _set_state(conn: asyncpg.Connection, rollout_id: int, state: str) -> None:
    await conn.execute(
        "UPDATE config_rollouts SET state = $2, phase_started_at = now() WHERE id = $1",
        rollout_id,
        state,
    )


async def _issue(
    conn: asyncpg.Connection, key: bytes, rollout_id: int, phase: str, new_state: str | None = None
) -> None:
    """Make the phase's members active (new state first: layering reads it) and sign for them."""
    if new_state is not None:
        await _set_state(conn, rollout_id, new_state)
    devices = [
        r["device_id"]
        for r in await conn.fetch(
            """SELECT device_id FROM config_rollout_members
               WHERE rollout_id = $1 AND phase = $2 AND result IS NULL""",
            rollout_id,
            phase,
        )
    ]
    issued = await desired.recompute(conn, key, devices)
    await conn.executemany(
        "UPDATE config_rollout_members SET version = $3 WHERE rollout_id = $1 AND device_id = $2",
        [(rollout_id, d, i.version) for d, i in issued.items()],
    )
    # Something else already gave these devices this document: nothing to wait for.
    await conn.execute(
        """UPDATE config_rollout_members SET result = 'unchanged'
           WHERE rollout_id = $1 AND phase = $2 AND result IS NULL AND version IS NULL""",
        rollout_id,
        phase,
    )


async def _count(conn: asyncpg.Connection, rollout_id: int) -> None:
    await conn.execute(
        """UPDATE config_rollouts r SET
               applied_count = (SELECT count(*) FROM config_rollout_members
                                WHERE rollout_id = r.id AND result = 'applied'),
               failed_count = (SELECT count(*) FROM config_rollout_members
                               WHERE rollout_id = r.id AND result = ANY($2::text[]))
           WHERE id = $1""",
        rollout_id,
        list(FAILED),
    )


async def _finish(
    conn: asyncpg.Connection,
    key: bytes,
    rollout_id: int,
    fleet_id: int,
    changes: dict[str, Any],
    state: str,
    reason: str | None,
) -> None:
    await conn.execute(
        """UPDATE config_rollouts SET state = $2, reason = $3, finished_at = now()
           WHERE id = $1""",
        rollout_id,
        state,
        reason,
    )
    if state == "done":
        # The staged copy stops applying and the fleet layer now holds it: same documents.
        tenant = await conn.fetchval("SELECT tenant_id FROM fleets WHERE id = $1", fleet_id)
        await conn.execute(
            """INSERT INTO config_layers (tenant_id, scope, fleet_id, document)
               VALUES ($1, 'fleet', $2, $3)
               ON CONFLICT (fleet_id) WHERE scope = 'fleet' DO UPDATE
               SET document = config_layers.document || EXCLUDED.document,
                   version = config_layers.version + 1, updated_at = now()""",
            tenant,
            fleet_id,
            changes,
        )
    else:
        # Mark the members still waiting, so the view says what happened to them.
        await conn.execute(
            """UPDATE config_rollout_members SET result = 'cancelled',
                   reason = 'rollout aborted before this device answered'
               WHERE rollout_id = $1 AND result IS NULL AND version IS NOT NULL""",
            rollout_id,
        )
    await _count(conn, rollout_id)
    # Devices that joined the fleet meanwhile get the new fleet layer; aborted
    # canaries get their previous document back under a new version.
    await desired.recompute(conn, key, await layering.devices_in_fleet(conn, fleet_id))


async def view(conn: asyncpg.Connection, rollout_id: int) -> dict[str, Any] | None:
    r = await conn.fetchrow("SELECT * FROM config_rollouts WHERE id = $1", rollout_id)
    if r is None:
        return None
    members = await conn.fetch(
        """SELECT m.device_id, m.phase, m.version, m.result, m.reason, m.answered_at
           FROM config_rollout_members m WHERE m.rollout_id = $1
           ORDER BY m.phase, m.device_id""",
        rollout_id,
    )
    out = dict(r)
    out["pending_count"] = sum(
        1 for m in members if m["result"] is None and m["version"] is not None
    )
    out["members"] = [dict(m) for m in members]
    return out
