"""The processing stage: follow stored positions, evaluate per vehicle in fix-time order.

One owner at a time: ``run`` holds a PostgreSQL advisory lock on a dedicated
connection, so several ``fleet-cloud serve`` nodes (or a standalone
``fleet-cloud process``) never double-process; the others wait as standbys
and take over when the owner's connection dies.

Per poll, in one transaction: read new rows (``follower``), group them by
vehicle, and for each vehicle either continue from its saved state (every new
fix is newer than its watermark) or, for late fixes, restart from the newest
snapshot older than the earliest late fix and re-evaluate everything after
it. Events found again are no-ops (unique key), events no longer found are
retracted, new ones found behind the watermark are flagged late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from fleet_cloud.processing import writes
from fleet_cloud.processing.config import ProcessingSettings
from fleet_cloud.processing.evaluator import Evaluator, EventOut, FixIn, new_state
from fleet_cloud.processing.follower import Follower
from fleet_cloud.processing.geofences import Geofence, GeofenceError, GeofenceIndex, GeofenceSpec
from fleet_cloud.processing.rules import RuleSet
from fleet_cloud.processing.visits import RoutePlan, StopPlan
from fleet_cloud.store import dt_to_ms, ms_to_dt

log = logging.getLogger(__name__)

# Distinct from the migration runner's key.
LOCK_KEY = 0x666C656574 + 6

_REPLAY_FIXES = """
SELECT device_id, boot_id, seq, fix_time, lat, lon, speed, engine, imu FROM positions
WHERE vehicle_id = $1 AND filter_reason IS NULL AND ($2::timestamptz IS NULL OR fix_time > $2)
ORDER BY fix_time, device_id, boot_id, seq
"""


def fix_from_row(r: asyncpg.Record) -> FixIn:
    return FixIn(
        key=f"{r['device_id']}:{r['boot_id']}:{r['seq']}",
        t=dt_to_ms(r["fix_time"]),
        lat=r["lat"],
        lon=r["lon"],
        speed=r["speed"],
        eng=r["engine"],
        imu=r["imu"],
    )


def fix_order(f: FixIn) -> tuple[int, str]:
    return (f.t, f.key)


class TenantFences:
    """Geofence indexes per tenant, rebuilt when the tenant's geofences change."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple[int, Any], GeofenceIndex]] = {}

    async def get(self, conn: asyncpg.Connection, tenant_id: int) -> GeofenceIndex:
        ver = await conn.fetchrow(
            "SELECT count(*) AS n, max(updated_at) AS at FROM geofences WHERE tenant_id = $1",
            tenant_id,
        )
        assert ver is not None
        key = (int(ver["n"]), ver["at"])
        hit = self._cache.get(tenant_id)
        if hit is not None and hit[0] == key:
            return hit[1]
        rows = await conn.fetch("SELECT * FROM geofences WHERE tenant_id = $1", tenant_id)
        fences = []
        for r in rows:
            try:
                fences.append(Geofence.build(spec_from_row(r)))
            except GeofenceError as e:  # validated on the way in; never let one block the rest
                log.error("geofence %s unusable: %s", r["id"], e)
        index = GeofenceIndex(fences)
        self._cache[tenant_id] = (key, index)
        return index


def spec_from_row(r: asyncpg.Record) -> GeofenceSpec:
    return GeofenceSpec(
        id=r["id"],
        tenant_id=r["tenant_id"],
        name=r["name"],
        kind=r["kind"],
        geometry=r["geometry"],
        radius_m=r["radius_m"],
        width_m=r["width_m"],
        speed_limit_kmh=r["speed_limit_kmh"],
        hysteresis_m=r["hysteresis_m"],
        min_dwell_s=r["min_dwell_s"],
        dwell_alert_s=r["dwell_alert_s"],
        fleet_id=r["fleet_id"],
        vehicle_id=r["vehicle_id"],
        active_hours=r["active_hours"],
        severity=r["severity"],
        group_id=r["group_id"],
    )


async def tenant_rule_rows(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT vehicle_id, type, enabled, severity, params FROM event_rules
               WHERE tenant_id = $1 ORDER BY vehicle_id NULLS FIRST""",
            tenant_id,
        )
    )


def rules_for(rows: Sequence[asyncpg.Record], vehicle_id: int) -> RuleSet:
    """Defaults, then the tenant's rows, then the vehicle's own (they win)."""
    rules = RuleSet()
    for r in rows:
        if r["vehicle_id"] is None or r["vehicle_id"] == vehicle_id:
            rules.apply(r["type"], r["enabled"], r["severity"], r["params"] or {})
    return rules


async def load_rules(conn: asyncpg.Connection, tenant_id: int, vehicle_id: int) -> RuleSet:
    return rules_for(await tenant_rule_rows(conn, tenant_id), vehicle_id)


async def load_routes(
    conn: asyncpg.Connection, vehicle_id: int, fixes: Sequence[FixIn]
) -> list[RoutePlan]:
    """The vehicle's routes whose planned window overlaps these fixes."""
    rows = await conn.fetch(
        """SELECT * FROM routes WHERE vehicle_id = $1 AND planned_end >= $2
             AND planned_start <= $3 ORDER BY id""",
        vehicle_id,
        ms_to_dt(fixes[0].t),
        ms_to_dt(fixes[-1].t),
    )
    if not rows:
        return []
    stops = await conn.fetch(
        "SELECT * FROM route_stops WHERE route_id = ANY($1::bigint[])", [r["id"] for r in rows]
    )
    return [
        RoutePlan(
            id=r["id"],
            name=r["name"],
            start=dt_to_ms(r["planned_start"]),
            end=dt_to_ms(r["planned_end"]),
            corridor_m=r["corridor_m"],
            stops=[
                StopPlan(
                    id=s["id"],
                    seq=s["seq"],
                    name=s["name"],
                    lat=s["lat"],
                    lon=s["lon"],
                    radius_m=s["radius_m"],
                    window_start=dt_to_ms(s["window_start"]) if s["window_start"] else None,
                    window_end=dt_to_ms(s["window_end"]) if s["window_end"] else None,
                    min_dwell_s=s["min_dwell_s"],
                )
                for s in stops
                if s["route_id"] == r["id"]
            ],
        )
        for r in rows
    ]


class Processor:
    def __init__(self, pool: asyncpg.Pool, cfg: ProcessingSettings | None = None) -> None:
        self.pool = pool
        self.cfg = cfg or ProcessingSettings()
        self.follower = Follower("main", self.cfg.batch, self.cfg.hole_grace_s)
        self.fences = TenantFences()
        self.owner = False
        self.counters: dict[str, int] = defaultdict(int)
        self._rule_rows: dict[int, list[asyncpg.Record]] = {}
        self._indexes: dict[int, GeofenceIndex] = {}

    # -- one poll ------------------------------------------------------------

    async def step(self) -> int:
        """Process what is new and re-evaluate vehicles whose late data settled;
        return how much was done (0: idle)."""
        # Per poll: each tenant's rules and geofence index are looked up once.
        self._rule_rows = {}
        self._indexes = {}
        async with self.pool.acquire() as conn, conn.transaction():
            cp = await self.follower.load(conn)
            rows, nxt = await self.follower.poll(conn, cp)
            by_vehicle: dict[int, list[asyncpg.Record]] = defaultdict(list)
            for r in rows:
                if r["vehicle_id"] is not None and r["filter_reason"] is None:
                    by_vehicle[int(r["vehicle_id"])].append(r)
            for vid in sorted(by_vehicle):
                try:
                    async with conn.transaction():  # a savepoint: one vehicle's failure
                        await self._vehicle(conn, vid, by_vehicle[vid])
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    raise  # the database: retry the whole poll
                except Exception:
                    # A bug must not stop every other vehicle. The rows stay stored;
                    # any later late fix of this vehicle re-evaluates them.
                    log.exception(
                        "processing vehicle %s failed; skipped %d fixes", vid, len(by_vehicle[vid])
                    )
                    self.counters["vehicle_errors"] += 1
            if rows or nxt.holes != cp.holes:
                await self.follower.save(conn, nxt)
            self.counters["rows"] += len(rows)
            replayed = await self.reevaluate_due(conn)
            return len(rows) + replayed

    async def _vehicle(
        self, conn: asyncpg.Connection, vid: int, rows: Sequence[asyncpg.Record]
    ) -> None:
        ps = await conn.fetchrow(
            """SELECT watermark, state, last_recv FROM vehicle_proc_state
               WHERE vehicle_id = $1 FOR UPDATE""",
            vid,
        )
        fixes = sorted((fix_from_row(r) for r in rows), key=fix_order)
        recv = max(r["recv_time"] for r in rows)
        if ps is None:
            await self._evaluate(conn, vid, new_state(), fixes, None, None, False, recv)
            return
        wm = dt_to_ms(ps["watermark"])
        if ps["last_recv"] is not None:
            recv = max(recv, ps["last_recv"])
        late = [f for f in fixes if f.t <= wm]
        if late:
            # Remember where the late data starts; the re-evaluation runs once the
            # vehicle's late data has settled (a backlog comes in many batches).
            await conn.execute(
                """INSERT INTO vehicle_reeval (vehicle_id, from_time, due_at)
                   VALUES ($1, $2, now() + make_interval(secs => $3))
                   ON CONFLICT (vehicle_id) DO UPDATE
                   SET from_time = least(vehicle_reeval.from_time, EXCLUDED.from_time),
                       due_at = EXCLUDED.due_at""",
                vid,
                ms_to_dt(late[0].t),
                float(self.cfg.late_settle_s),
            )
        new = [f for f in fixes if f.t > wm]
        if new:
            await self._evaluate(conn, vid, ps["state"], new, wm, None, False, recv)
        else:
            await conn.execute(
                "UPDATE vehicle_proc_state SET last_recv = $2 WHERE vehicle_id = $1", vid, recv
            )

    async def reevaluate_due(self, conn: asyncpg.Connection, limit: int = 50) -> int:
        """Re-evaluate vehicles whose late data has settled; return how many."""
        due = await conn.fetch(
            """DELETE FROM vehicle_reeval WHERE vehicle_id IN (
                   SELECT vehicle_id FROM vehicle_reeval WHERE due_at <= now()
                   ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING vehicle_id, from_time""",
            limit,
        )
        for d in due:
            vid = int(d["vehicle_id"])
            try:
                async with conn.transaction():
                    await self._replay(conn, vid, d["from_time"])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                raise
            except Exception:
                log.exception("re-evaluating vehicle %s failed", vid)
                self.counters["vehicle_errors"] += 1
        return len(due)

    async def _replay(self, conn: asyncpg.Connection, vid: int, from_time: datetime) -> None:
        """Restart from the newest snapshot strictly before from_time and re-evaluate
        everything stored after it."""
        ps = await conn.fetchrow(
            "SELECT watermark, last_recv FROM vehicle_proc_state WHERE vehicle_id = $1 FOR UPDATE",
            vid,
        )
        if ps is None:
            return
        snap = await conn.fetchrow(
            """SELECT upto, state FROM vehicle_state_snapshots
               WHERE vehicle_id = $1 AND upto < $2 ORDER BY upto DESC LIMIT 1""",
            vid,
            from_time,
        )
        await conn.execute(
            "DELETE FROM vehicle_state_snapshots WHERE vehicle_id = $1 AND upto >= $2",
            vid,
            from_time,
        )
        replay_after = snap["upto"] if snap else None
        fixes = [fix_from_row(r) for r in await conn.fetch(_REPLAY_FIXES, vid, replay_after)]
        self.counters["replays"] += 1
        await self._evaluate(
            conn, vid, snap["state"] if snap else new_state(), fixes,
            dt_to_ms(ps["watermark"]), replay_after, True, ps["last_recv"],
        )  # fmt: skip

    async def _evaluate(
        self,
        conn: asyncpg.Connection,
        vid: int,
        state: dict[str, Any],
        fixes: list[FixIn],
        old_wm: int | None,
        replay_after: datetime | None,
        replaying: bool,
        recv: datetime | None,
    ) -> None:
        """Feed fixes to the vehicle's evaluator from state; store what it derived."""
        info = await conn.fetchrow("SELECT tenant_id, fleet_id FROM vehicles WHERE id = $1", vid)
        if info is None or not fixes:
            return  # vehicle deleted since
        tenant_id = int(info["tenant_id"])
        if tenant_id not in self._indexes:
            self._indexes[tenant_id] = await self.fences.get(conn, tenant_id)
            self._rule_rows[tenant_id] = await tenant_rule_rows(conn, tenant_id)
        routes = await load_routes(conn, vid, fixes)
        groups = frozenset(
            int(r["group_id"])
            for r in await conn.fetch(
                "SELECT group_id FROM vehicle_group_members WHERE vehicle_id = $1", vid
            )
        )
        ev = Evaluator(
            vid,
            info["fleet_id"],
            rules_for(self._rule_rows[tenant_id], vid),
            self._indexes[tenant_id],
            state,
            routes,
            groups,
        )
        snaps = self._feed(ev, fixes)
        if snaps:
            await conn.executemany(
                """INSERT INTO vehicle_state_snapshots (vehicle_id, upto, state) VALUES ($1, $2, $3)
                   ON CONFLICT (vehicle_id, upto) DO UPDATE SET state = EXCLUDED.state""",
                [(vid, ms_to_dt(t), s) for t, s in snaps],
            )
        new_rows = await writes.upsert_events(
            conn, tenant_id, vid, ev.events, old_wm, self.cfg.notify_max_age_s
        )
        if replaying:
            n = await writes.retract_missing(conn, vid, replay_after, ev.events)
            self.counters["retracted"] += n
        await writes.notify(conn, tenant_id, vid, new_rows)
        self.counters["events"] += len(new_rows)
        segs = list(ev.segments)
        open_seg = ev.open_segment()
        if open_seg is not None:
            segs.append(open_seg)
        await writes.write_segments(conn, vid, segs, replay_after, replaying)
        await writes.write_visits(conn, ev.st, routes)

        wm = max(fixes[-1].t, old_wm if old_wm is not None else fixes[-1].t)
        await conn.execute(
            """INSERT INTO vehicle_proc_state (vehicle_id, watermark, state, last_recv, updated_at)
               VALUES ($1, $2, $3, $4, now())
               ON CONFLICT (vehicle_id) DO UPDATE SET watermark = EXCLUDED.watermark,
                   state = EXCLUDED.state, last_recv = EXCLUDED.last_recv, updated_at = now()""",
            vid,
            ms_to_dt(wm),
            ev.st,
            recv,
        )
        await conn.execute(
            "DELETE FROM vehicle_state_snapshots WHERE vehicle_id = $1 AND upto < $2",
            vid,
            ms_to_dt(wm) - timedelta(seconds=self.cfg.snapshot_keep_s),
        )

    def _feed(self, ev: Evaluator, fixes: Sequence[FixIn]) -> list[tuple[int, dict[str, Any]]]:
        """Feed fixes in order, taking a snapshot every snapshot_every_s of fix time."""
        every = int(self.cfg.snapshot_every_s * 1000)
        snaps: list[tuple[int, dict[str, Any]]] = []
        for f in fixes:
            last = ev.st["last"]
            if last is not None and f.t > last["t"]:
                if f.t - ev.st.get("snap_t", -(2**62)) >= every:
                    # snap_t is part of the state, so a replay takes the same snapshots.
                    ev.st["snap_t"] = last["t"]
                    snaps.append((last["t"], orjson.loads(orjson.dumps(ev.st))))
            ev.feed(f)
        return snaps

    # -- online / offline ------------------------------------------------------

    async def presence(self) -> int:
        """Device online/offline from its status (Last Will) and an inactivity timeout."""
        now = time.time()
        n = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT d.vehicle_id, v.tenant_id, ds.online AS st_online,
                          ds.updated_at AS st_at, ps.last_recv, p.online AS known
                   FROM devices d JOIN vehicles v ON v.id = d.vehicle_id
                   LEFT JOIN device_status ds ON ds.device_id = d.device_id
                   LEFT JOIN vehicle_proc_state ps ON ps.vehicle_id = d.vehicle_id
                   LEFT JOIN device_presence p ON p.vehicle_id = d.vehicle_id
                   WHERE ds.device_id IS NOT NULL OR ps.last_recv IS NOT NULL"""
            )
            # Only vehicles with presence rules of their own need a rules lookup.
            custom = {
                (r["tenant_id"], r["vehicle_id"])
                for r in await conn.fetch(
                    """SELECT tenant_id, vehicle_id FROM event_rules
                       WHERE type IN ('device_online', 'device_offline')"""
                )
            }
            defaults = RuleSet()
            for r in rows:
                rules = defaults
                if (r["tenant_id"], None) in custom or (r["tenant_id"], r["vehicle_id"]) in custom:
                    rules = await load_rules(conn, r["tenant_id"], r["vehicle_id"])
                inactivity = float(rules.p("device_offline", "inactivity_s") or 900.0)
                online, since, reason = _presence(r, now, inactivity)
                if r["known"] is None:
                    await conn.execute(
                        """INSERT INTO device_presence (vehicle_id, online, since, reason)
                           VALUES ($1, $2, $3, $4)""",
                        r["vehicle_id"], online, since, reason,
                    )  # fmt: skip
                    continue
                if r["known"] == online:
                    continue
                await conn.execute(
                    """UPDATE device_presence SET online = $2, since = $3, reason = $4
                       WHERE vehicle_id = $1""",
                    r["vehicle_id"], online, since, reason,
                )  # fmt: skip
                rule = "device_online" if online else "device_offline"
                if not rules.enabled.get(rule, True):
                    continue
                t = dt_to_ms(since)
                e = EventOut(rule, "", f"presence:{t}", t, t, rules.severity[rule], None, None,
                             details={"reason": reason})  # fmt: skip
                new_rows = await writes.upsert_events(
                    conn, r["tenant_id"], r["vehicle_id"], [e], None, self.cfg.notify_max_age_s
                )
                await writes.notify(conn, r["tenant_id"], r["vehicle_id"], new_rows)
                n += len(new_rows)
        return n

    # -- ownership loop --------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Process until cancelled (or stop is set), as the single owner."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self._own(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                self.owner = False
                log.warning("processing: database trouble (%s); retrying", e)
            except Exception:
                self.owner = False
                log.exception("processing: unexpected failure; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)

    async def _own(self, stop: asyncio.Event) -> None:
        lock = await self.pool.acquire()
        try:
            while not await lock.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                self.owner = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=2.0)
                if stop.is_set():
                    return
            self.owner = True
            log.info("processing: this process owns processing")
            next_presence = 0.0
            while not stop.is_set():
                n = await self.step()
                if time.monotonic() >= next_presence:
                    await self.presence()
                    next_presence = time.monotonic() + self.cfg.presence_every_s
                if n < self.cfg.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.cfg.poll_s)
                # The lock lives with this connection: check it is still there.
                await lock.fetchval("SELECT 1")
        finally:
            self.owner = False
            with contextlib.suppress(Exception):
                await lock.execute("SELECT pg_advisory_unlock_all()")
            await self.pool.release(lock)


def _presence(r: asyncpg.Record, now: float, inactivity_s: float) -> tuple[bool, datetime, str]:
    last_recv: datetime | None = r["last_recv"]
    st_at: datetime | None = r["st_at"]
    if r["st_online"] is False and st_at is not None and (last_recv is None or last_recv <= st_at):
        return False, st_at, "last_will"
    seen = max((x for x in (last_recv, st_at if r["st_online"] else None) if x), default=None)
    if seen is None:
        return False, st_at or ms_to_dt(int(now * 1000)), "never_seen"
    if now - seen.timestamp() > inactivity_s:
        return False, seen + timedelta(seconds=inactivity_s), "inactivity"
    return True, seen, "data" if seen == last_recv else "status"
