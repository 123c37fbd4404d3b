"""History benchmark: one vehicle-day at 1 Hz (86,400 fixes) through the real API.

    .venv/bin/python bench/history/run.py [--requests 40]

Starts Mosquitto and `fleet-cloud serve` on a fresh database, loads two
vehicle-days of 1 Hz positions (ours and another vehicle's, interleaved in the
table), then times GET /api/v1/vehicles/{id}/positions for the day in each
shape: rows, columns, and columns downsampled to 2,000 points. The raw index
scan (EXPLAIN ANALYZE) is printed beside it. Target: columns p95 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import PG_ADMIN_DSN, Broker, CloudStack, create_database, drop_database, tool  # noqa: E402

DAY = "2026-11-20"


async def load_days(dsn: str, vehicles: list[tuple[int, str]]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        for vid, device in vehicles:
            await conn.execute(
                """INSERT INTO positions (device_id, boot_id, seq, fix_time, recv_time, vehicle_id,
                                          lat, lon, speed, heading, altitude, sats, hdop)
                   SELECT $2, 1, g, $3::text::timestamptz + g * interval '1 second', now(), $1,
                          52.5 + g * 1e-6, 13.4 + g * 1e-6, 40 + g % 30, g % 360, 30, 9, 0.9
                   FROM generate_series(0, 86399) g""",
                vid,
                device,
                DAY,
            )
        await conn.execute("ANALYZE positions")
        plan = await conn.fetch(
            f"""EXPLAIN ANALYZE SELECT fix_time, lat, lon, speed, heading FROM positions
                WHERE vehicle_id = {vehicles[0][0]} AND fix_time >= '{DAY}'
                  AND fix_time < '{DAY}'::date + 1 ORDER BY fix_time"""
        )
        return float(plan[-1][0].split(":")[1].split()[0])
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    broker = Broker(work / "mosquitto").start()
    name, dsn = create_database(PG_ADMIN_DSN)
    cloud = None
    try:
        subprocess.run(
            [tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True, capture_output=True
        )
        cloud = CloudStack(broker, dsn, work).start()
        ours = cloud.register_vehicle("Day van", "day-van")
        other = cloud.register_vehicle("Other van", "other-van")
        scan_ms = asyncio.run(load_days(dsn, [(ours, "day-van"), (other, "other-van")]))
        url = (
            f"{cloud.base_url}/api/v1/vehicles/{ours}/positions"
            f"?from={DAY}T00:00:00Z&to={DAY}T23:59:59.999Z&limit=100000"
        )
        results: dict[str, object] = {"index_scan_ms": scan_ms}
        print(f"{'shape':<34}{'fixes':>8}{'bytes':>11}{'p50 ms':>9}{'p95 ms':>9}")
        print(f"{'raw index scan (EXPLAIN ANALYZE)':<34}{86400:>8}{'':>11}{scan_ms:>9.1f}")
        with httpx.Client(headers={"authorization": f"Bearer {cloud.token()}"}, timeout=30) as h:
            shapes = [
                ("rows", ""),
                ("columns", "&format=columns"),
                ("columns, max_points=2000", "&format=columns&max_points=2000"),
            ]
            for label, extra in shapes:
                h.get(url + extra)  # warm-up
                times = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    r = h.get(url + extra)
                    times.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                doc = r.json()
                n = len(doc["positions"]) if "positions" in doc else len(doc["t"])
                p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
                results[label] = {"fixes": n, "bytes": len(r.content), "p50_ms": p50, "p95_ms": p95}
                print(f"{label:<34}{n:>8}{len(r.content):>11,}{p50:>9.1f}{p95:>9.1f}")
        print(orjson.dumps(results).decode())
    finally:
        if cloud is not None:
            cloud.stop()
        broker.stop()
        drop_database(name, PG_ADMIN_DSN)


if __name__ == "__main__":
    main()
