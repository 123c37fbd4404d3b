"""Per-vehicle hourly statistics, kept current incrementally (daily is a view over them).

Each run finds the (vehicle, hour) buckets that stored positions touched since
the last run, by ingest_seq, and recomputes each of them whole from positions:
fix count, distance (great-circle metres between consecutive plausible
fixes), max and average speed, moving time (speed > 3 km/h) and idle time
(ignition on, speed <= 3 km/h). A gap over 5 minutes counts as neither.
Recomputing a bucket whole makes a run idempotent, so late data simply
touches its old bucket again.

ingest_seq values are taken when a row is inserted, before its transaction
commits, so a run re-reads a margin below its watermark: a row committed late
with a smaller seq is still seen.
"""

from __future__ import annotations

import asyncpg

ROLLUP = "vehicle_stats"
SEQ_MARGIN = 50_000  # more than the rows of all ingest transactions in flight at once
MOVING_KMH = 3.0
MAX_GAP_S = 300
_LOCK = 0x726F6C6C  # "roll": one runner per database at a time

_REFRESH = f"""
WITH touched AS (
    SELECT DISTINCT vehicle_id, date_trunc('hour', fix_time) AS bucket
    FROM positions WHERE ingest_seq > $1 AND vehicle_id IS NOT NULL
), pts AS (
    -- the look-back gives the first fix of the hour its predecessor
    SELECT p.vehicle_id, t.bucket, p.fix_time, p.lat, p.lon, p.speed,
           coalesce((p.engine->>'ign')::boolean, false) AS ign
    FROM touched t JOIN positions p
      ON p.vehicle_id = t.vehicle_id
     AND p.fix_time >= t.bucket - interval '{MAX_GAP_S} seconds'
     AND p.fix_time < t.bucket + interval '1 hour'
    WHERE p.filter_reason IS NULL
), seg AS (
    SELECT vehicle_id, bucket, fix_time, speed, ign,
           fleet_distance_m(lag(lat) OVER w, lag(lon) OVER w, lat, lon) AS d_m,
           date_part('epoch', fix_time - lag(fix_time) OVER w) AS dt_s
    FROM pts WINDOW w AS (PARTITION BY vehicle_id, bucket ORDER BY fix_time)
)
INSERT INTO vehicle_stats_hourly AS h
    (vehicle_id, bucket, fixes, distance_km, max_speed_kmh, avg_speed_kmh, moving_s, idle_s)
SELECT vehicle_id, bucket, count(*), coalesce(sum(d_m), 0) / 1000, max(speed), avg(speed),
       coalesce(sum(dt_s) FILTER (WHERE dt_s <= {MAX_GAP_S} AND speed > {MOVING_KMH}), 0),
       coalesce(sum(dt_s) FILTER (WHERE dt_s <= {MAX_GAP_S} AND speed <= {MOVING_KMH} AND ign), 0)
FROM seg WHERE fix_time >= bucket
GROUP BY vehicle_id, bucket
ON CONFLICT (vehicle_id, bucket) DO UPDATE SET
    fixes = EXCLUDED.fixes, distance_km = EXCLUDED.distance_km,
    max_speed_kmh = EXCLUDED.max_speed_kmh, avg_speed_kmh = EXCLUDED.avg_speed_kmh,
    moving_s = EXCLUDED.moving_s, idle_s = EXCLUDED.idle_s
"""


async def refresh(conn: asyncpg.Connection) -> int | None:
    """Bring the hourly statistics up to date; the number of buckets rewritten.

    None when another process is already doing it.
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK):
            return None
        last = await conn.fetchval("SELECT last_seq FROM rollup_state WHERE name = $1", ROLLUP)
        top = await conn.fetchval("SELECT max(ingest_seq) FROM positions")
        if top is None:
            return 0
        since = max((last or 0) - SEQ_MARGIN, 0)
        status = await conn.execute(_REFRESH, since)
        await conn.execute(
            """INSERT INTO rollup_state (name, last_seq) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET last_seq = EXCLUDED.last_seq, updated_at = now()""",
            ROLLUP,
            top,
        )
        return int(status.rsplit(" ", 1)[1])
