"""What processing writes: events (idempotent), trips/stops, and the notification outbox."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from fleet_cloud.processing.evaluator import EventOut, SegmentOut
from fleet_cloud.processing.visits import RoutePlan, next_stop_eta
from fleet_cloud.store import dt_to_ms, ms_to_dt

NOTIFY_CHANNEL = "fleet_events"
PRESENCE_TYPES = ["device_online", "device_offline"]

_UPSERT_EVENTS = """
INSERT INTO events (tenant_id, vehicle_id, type, rule_key, fix_key, fix_time, decided_time,
                    severity, late, throttled, lat, lon, geofence_id, details, notify_status)
SELECT $1, $2, e.* FROM unnest($3::text[], $4::text[], $5::text[], $6::timestamptz[],
                               $7::timestamptz[], $8::text[], $9::bool[], $10::bool[],
                               $11::float8[], $12::float8[], $13::bigint[], $14::jsonb[],
                               $15::text[]) AS e
ON CONFLICT (vehicle_id, type, rule_key, fix_key) DO UPDATE
    -- Found again: take the latest evaluation's view of it (a re-evaluation may
    -- settle it at another fix); keep the first late flag, acknowledgement and
    -- notification decision.
    SET retracted_at = NULL, decided_time = EXCLUDED.decided_time,
        details = EXCLUDED.details, throttled = EXCLUDED.throttled,
        severity = EXCLUDED.severity
    WHERE events.retracted_at IS NOT NULL
       OR events.decided_time <> EXCLUDED.decided_time
       OR events.details <> EXCLUDED.details
       OR events.throttled <> EXCLUDED.throttled
       OR events.severity <> EXCLUDED.severity
RETURNING id, type, severity, fix_time, late, lat, lon, geofence_id, details, notify_status,
          rule_key, (xmax = 0) AS inserted
"""


async def upsert_events(
    conn: asyncpg.Connection,
    tenant_id: int,
    vehicle_id: int,
    events: Sequence[EventOut],
    late_before_ms: int | None,
    notify_max_age_s: float,
) -> list[asyncpg.Record]:
    """Store events (a known one is a no-op); return the rows that are new."""
    if not events:
        return []
    now_ms = int(time.time() * 1000)

    def status(e: EventOut) -> str:
        if e.throttled:
            return "throttled"
        if now_ms - e.t > notify_max_age_s * 1000:
            return "stale"
        return "sent"

    rows = await conn.fetch(
        _UPSERT_EVENTS,
        tenant_id,
        vehicle_id,
        [e.type for e in events],
        [e.rule_key for e in events],
        [e.fix_key for e in events],
        [ms_to_dt(e.t) for e in events],
        [ms_to_dt(e.decided_t) for e in events],
        [e.severity for e in events],
        [late_before_ms is not None and e.decided_t <= late_before_ms for e in events],
        [e.throttled for e in events],
        [e.lat for e in events],
        [e.lon for e in events],
        [e.geofence_id for e in events],
        [e.details for e in events],
        [status(e) for e in events],
    )
    return [r for r in rows if r["inserted"]]


async def retract_missing(
    conn: asyncpg.Connection, vehicle_id: int, after: datetime | None, kept: Sequence[EventOut]
) -> int:
    """Re-evaluation from ``after`` no longer finds these: mark them retracted."""
    result = await conn.execute(
        """UPDATE events SET retracted_at = now(),
                  notify_status = COALESCE(notify_status, 'retracted')
           WHERE vehicle_id = $1 AND retracted_at IS NULL AND type <> ALL($2::text[])
             AND ($3::timestamptz IS NULL OR decided_time > $3)
             AND (type, rule_key, fix_key) NOT IN (
                 SELECT * FROM unnest($4::text[], $5::text[], $6::text[]))""",
        vehicle_id,
        PRESENCE_TYPES,
        after,
        [e.type for e in kept],
        [e.rule_key for e in kept],
        [e.fix_key for e in kept],
    )
    return int(result.rsplit(" ", 1)[1])


async def notify(
    conn: asyncpg.Connection, tenant_id: int, vehicle_id: int, rows: Sequence[asyncpg.Record]
) -> None:
    """Queue new, notifiable events: the WebSocket fan-out (NOTIFY, delivered
    to every API node at commit), webhook and email deliveries (outbox rows)."""
    due = [r for r in rows if r["notify_status"] == "sent"]
    if not due:
        return
    for r in due:
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            NOTIFY_CHANNEL,
            orjson.dumps(alert_frame(tenant_id, vehicle_id, r)).decode(),
        )
    # One delivery row per (channel, event) the channel subscribes to: the
    # same rule for webhooks and e-mail recipients.
    for deliveries, target, channels in (
        ("webhook_deliveries", "webhook_id", "webhooks"),
        ("email_deliveries", "recipient_id", "email_recipients"),
    ):
        await conn.execute(
            f"""INSERT INTO {deliveries} ({target}, event_id)
               SELECT c.id, e.id FROM {channels} c
               JOIN unnest($2::bigint[], $3::text[], $4::text[]) AS e(id, type, severity) ON true
               WHERE c.tenant_id = $1 AND c.enabled
                 AND (c.types IS NULL OR e.type = ANY(c.types))
                 AND array_position(ARRAY['info','warning','critical'], e.severity)
                     >= array_position(ARRAY['info','warning','critical'], c.min_severity)
               ON CONFLICT DO NOTHING""",
            tenant_id,
            [r["id"] for r in due],
            [r["type"] for r in due],
            [r["severity"] for r in due],
        )


def alert_frame(tenant_id: int, vehicle_id: int, r: asyncpg.Record) -> dict[str, Any]:
    """The WebSocket alert frame (tenant_id is used for routing, then dropped)."""
    details = r["details"] or {}
    return {
        "type": "alert",
        "tenant_id": tenant_id,
        "event": {
            "id": r["id"],
            "vehicle_id": vehicle_id,
            "type": r["type"],
            "severity": r["severity"],
            "t": dt_to_ms(r["fix_time"]),
            "late": r["late"],
            "lat": r["lat"],
            "lon": r["lon"],
            "geofence_id": r["geofence_id"],
            # keep NOTIFY payloads far below PostgreSQL's 8000-byte limit
            "details": {k: v for k, v in details.items() if isinstance(v, int | float | str)},
        },
    }


async def write_segments(
    conn: asyncpg.Connection,
    vehicle_id: int,
    segments: Sequence[SegmentOut],
    replay_after: datetime | None,
    replaying: bool,
) -> None:
    if replaying:
        # Every row shaped by a fix after the replay point is re-derived below
        # (a row can start before that point and still have been closed after it).
        for table in ("trips", "stops"):
            await conn.execute(
                f"DELETE FROM {table} WHERE vehicle_id = $1"
                " AND ($2::timestamptz IS NULL OR decided_time > $2)",
                vehicle_id,
                replay_after,
            )
    for s in segments:
        end = ms_to_dt(s.end_t) if s.end_t is not None else None
        if s.kind == "trip":
            st = s.stats
            await conn.execute(
                """INSERT INTO trips (vehicle_id, start_time, end_time, start_lat, start_lon,
                       end_lat, end_lon, distance_m, max_speed, start_reason, end_reason,
                       odometer_start_km, odometer_end_km, idle_s, overspeed_s, harsh_count, score,
                       decided_time, fuel_l, fuel_source)
                   VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
                   ON CONFLICT (vehicle_id, start_time) DO UPDATE SET
                       end_time = EXCLUDED.end_time, end_lat = EXCLUDED.end_lat,
                       end_lon = EXCLUDED.end_lon, distance_m = EXCLUDED.distance_m,
                       max_speed = EXCLUDED.max_speed, start_reason = EXCLUDED.start_reason,
                       end_reason = EXCLUDED.end_reason,
                       odometer_start_km = EXCLUDED.odometer_start_km,
                       odometer_end_km = EXCLUDED.odometer_end_km, idle_s = EXCLUDED.idle_s,
                       overspeed_s = EXCLUDED.overspeed_s, harsh_count = EXCLUDED.harsh_count,
                       score = EXCLUDED.score, decided_time = EXCLUDED.decided_time,
                       fuel_l = EXCLUDED.fuel_l, fuel_source = EXCLUDED.fuel_source""",
                vehicle_id, ms_to_dt(s.start_t), end, s.lat, s.lon, s.end_lat, s.end_lon,
                st["distance_m"], st["max_speed"], s.start_reason, s.end_reason,
                st["odo_start_km"], st["odo_end_km"], st["idle_s"], st["overspeed_s"],
                st["harsh_count"], st["score"], ms_to_dt(s.decided_t), st["fuel_l"],
                st["fuel_source"],
            )  # fmt: skip
        else:
            await conn.execute(
                """INSERT INTO stops (vehicle_id, start_time, end_time, lat, lon,
                                      start_reason, end_reason, decided_time)
                   VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
                   ON CONFLICT (vehicle_id, start_time) DO UPDATE SET
                       end_time = EXCLUDED.end_time, start_reason = EXCLUDED.start_reason,
                       end_reason = EXCLUDED.end_reason, decided_time = EXCLUDED.decided_time""",
                vehicle_id, ms_to_dt(s.start_t), end, s.lat, s.lon, s.start_reason, s.end_reason,
                ms_to_dt(s.decided_t),
            )  # fmt: skip


async def write_visits(
    conn: asyncpg.Connection, state: dict[str, Any], routes: Sequence[RoutePlan]
) -> None:
    """Visit status, arrival/departure and the next stop's ETA, from the evaluator state."""
    visits = state.get("visits", {})
    rows = []
    for route in routes:
        nxt = next_stop_eta(state, route)
        for stop in route.stops:
            vs = visits.get(str(stop.id)) or {"s": "planned", "arr": None, "dep": None}
            eta = ms_to_dt(nxt[1]) if nxt is not None and nxt[0] == stop.id else None
            arr = ms_to_dt(vs["arr"]) if vs.get("arr") is not None else None
            dep = ms_to_dt(vs["dep"]) if vs.get("dep") is not None else None
            rows.append((stop.id, vs["s"], arr, dep, eta))
    if rows:
        await conn.executemany(
            """UPDATE route_stops SET status = $2, arrived_at = $3, departed_at = $4, eta = $5
               WHERE id = $1""",
            rows,
        )
