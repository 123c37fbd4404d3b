"""Processing benchmark: fixes per second through the processing stage.

    .venv/bin/python bench/processing/run.py [--vehicles 20] [--geofences 2000]

A fresh database (dropped at the end) on the local PostgreSQL; each vehicle
gets the recorded scenario drive of tests/processing (about 3 h of fix time,
every event type) stored through the ingest's batch writer; the tenant has
the scenario's geofences plus N random circles and polygons around the city,
so every fix goes through the STRtree. Then, measured separately:

- in order: everything stored, then processed (fixes/s);
- late data: a 2-hour hole per vehicle filled after the rest, in 60-fix batches:
  re-evaluating at every batch (late_settle_s=0, the worst case), and once the
  backlog settled (the default behaviour; the settle wait itself not counted).

Prints a table, then one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import PG_ADMIN_DSN, create_database, drop_database, tool  # noqa: E402
from tests.processing.conftest import new_vehicle, store  # noqa: E402
from tests.processing.scenario import configure, scenario_drive  # noqa: E402

from fleet_cloud.db import create_pool  # noqa: E402
from fleet_cloud.processing.config import ProcessingSettings  # noqa: E402
from fleet_cloud.processing.service import Processor  # noqa: E402
from fleet_sim.geo import offset  # noqa: E402


async def run(dsn: str, vehicles: int, geofences: int) -> dict[str, float]:
    pool = await create_pool(dsn, 4)
    # late_settle_s=0: every late batch re-evaluates at once (the worst case).
    proc = Processor(pool, ProcessingSettings(hole_grace_s=0.0, late_settle_s=0.0))
    d = scenario_drive()
    tenant = "bench"
    cars = [await new_vehicle(pool, tenant) for _ in range(vehicles * 3)]
    tid = cars[0][0]
    async with pool.acquire() as conn:
        await configure(conn, tid, d)
        rng = random.Random(1)
        lat0, lon0 = d.fixes[0]["lat"], d.fixes[0]["lon"]
        for i in range(geofences):
            lat, lon = offset(lat0, lon0, rng.uniform(0, 15_000), rng.uniform(0, 360))
            await conn.execute(
                """INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m)
                   VALUES ($1, $2, 'circle', $3, $4)""",
                tid, f"g{i}", {"type": "Point", "coordinates": [lon, lat]},
                rng.uniform(30, 300),
            )  # fmt: skip
    n = len(d.fixes)
    # In order: store every vehicle's drive, then process it all.
    for _, vid, dev in cars[:vehicles]:
        for i in range(0, n, 500):
            await store(pool, dev, vid, d.fixes[i : i + 500])
    t = time.perf_counter()
    while await proc.step():
        pass
    in_order = time.perf_counter() - t
    # Late: the drive minus a 2-hour hole, processed; then the hole in 60-fix batches.
    t0 = d.fixes[0]["t"]
    h0, h1 = t0 + 20 * 60_000, t0 + 140 * 60_000
    live = [f for f in d.fixes if not h0 <= f["t"] < h1]
    hole = [f for f in d.fixes if h0 <= f["t"] < h1]
    for _, vid, dev in cars[vehicles:]:
        await store(pool, dev, vid, live)
    while await proc.step():
        pass
    t = time.perf_counter()
    for i in range(0, len(hole), 60):
        for _, vid, dev in cars[vehicles : 2 * vehicles]:
            await store(pool, dev, vid, hole[i : i + 60])
        while await proc.step():
            pass
    late = time.perf_counter() - t
    # The default: the re-evaluation waits until the backlog settles (timed without the wait).
    settle = 0.5
    proc = Processor(pool, ProcessingSettings(hole_grace_s=0.0, late_settle_s=settle))
    t = time.perf_counter()
    for i in range(0, len(hole), 60):
        for _, vid, dev in cars[2 * vehicles :]:
            await store(pool, dev, vid, hole[i : i + 60])
        while await proc.step():
            pass
    await asyncio.sleep(settle)
    while await proc.step():
        pass
    settled = time.perf_counter() - t - settle
    events = await pool.fetchval("SELECT count(*) FROM events WHERE retracted_at IS NULL")
    await pool.close()
    return {
        "vehicles": vehicles,
        "geofences": geofences + 3,
        "fixes_per_vehicle": n,
        "in_order_fixes_per_s": round(vehicles * n / in_order),
        "late_hole_fixes": len(hole) * vehicles,
        "late_hole_s": round(late, 2),
        "late_hole_fixes_per_s": round(len(hole) * vehicles / late),
        "late_settled_s": round(settled, 2),
        "late_settled_fixes_per_s": round(len(hole) * vehicles / settled),
        "events": int(events),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vehicles", type=int, default=20)
    ap.add_argument("--geofences", type=int, default=2000)
    a = ap.parse_args()
    name, dsn = create_database(PG_ADMIN_DSN)
    try:
        subprocess.run([tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        r = asyncio.run(run(dsn, a.vehicles, a.geofences))
    finally:
        drop_database(name, PG_ADMIN_DSN)
    width = max(len(k) for k in r)
    for k, v in r.items():
        print(f"{k:<{width}}  {v}")
    print(orjson.dumps(r).decode())


if __name__ == "__main__":
    main()
