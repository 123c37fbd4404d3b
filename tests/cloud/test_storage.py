"""Storage: engine samples, hourly/daily statistics, retention, TimescaleDB when present."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.harness import CloudStack, db_fetch, http_json, tool

HOUR = int(datetime(2026, 11, 1, 10, tzinfo=UTC).timestamp() * 1000)  # inside max_age


def rollup(cloud: CloudStack) -> str:
    return subprocess.run(
        [tool("fleet-cloud"), "rollup", "--dsn", cloud.dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_engine_values_become_typed_engine_samples(cloud: CloudStack) -> None:
    cloud.register_vehicle("Engine van", "engine-van")
    eng = {
        "age": 400,
        "rpm": 1850.0,
        "vss": 52.0,
        "ect": 88.0,
        "ign": True,
        "dtc": ["P0301", "U0100"],
    }
    cloud.publish_fixes("engine-van", [{"seq": 1, "t": HOUR, "lat": 52.5, "lon": 13.4, "eng": eng}])
    (row,) = db_fetch(
        cloud.dsn,
        "SELECT sample_time, rpm, vss, ect, ign, dtc FROM engine_samples"
        " WHERE device_id = 'engine-van'",
    )
    assert int(row["sample_time"].timestamp() * 1000) == HOUR - 400  # type: ignore[attr-defined]
    assert (row["rpm"], row["vss"], row["ect"], row["ign"]) == (1850.0, 52.0, 88.0, True)
    assert row["dtc"] == ["P0301", "U0100"]


def test_statistics_of_a_drive_with_a_known_answer(cloud: CloudStack) -> None:
    """10 minutes due north at 36 km/h (10 m/s, one fix per 10 s), then 5 minutes idling."""
    vid = cloud.register_vehicle("Stats van", "stats-van")
    deg_per_100m = 100 / 111_195.08  # metres per degree of latitude on the stats sphere
    fixes = [
        {"seq": i + 1, "t": HOUR + i * 10_000, "lat": 52.0 + i * deg_per_100m, "lon": 13.0,
         "spd": 36.0, "eng": {"ign": True}}
        for i in range(61)
    ]  # fmt: skip
    last_lat = fixes[-1]["lat"]
    fixes += [
        {"seq": 62 + i, "t": HOUR + 600_000 + (i + 1) * 10_000, "lat": last_lat, "lon": 13.0,
         "spd": 0.0, "eng": {"ign": True}}
        for i in range(30)
    ]  # fmt: skip
    cloud.publish_fixes("stats-van", fixes)
    assert "hourly buckets updated" in rollup(cloud)
    token = cloud.token()
    url = (
        f"{cloud.base_url}/api/v1/vehicles/{vid}/stats"
        "?period=hour&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z"
    )
    (hour,) = http_json(url, token=token)  # type: ignore[misc]
    assert hour["fixes"] == 91
    assert hour["distance_km"] == pytest.approx(6.0, rel=1e-3)
    assert hour["moving_s"] == pytest.approx(600) and hour["idle_s"] == pytest.approx(300)
    assert hour["max_speed_kmh"] == 36.0
    (day,) = http_json(url.replace("period=hour", "period=day"), token=token)  # type: ignore[misc]
    assert day["distance_km"] == pytest.approx(6.0, rel=1e-3) and day["fixes"] == 91
    # Late data for the same hour: the bucket is recomputed whole, not added twice.
    cloud.publish_fixes(
        "stats-van", [{"seq": 200, "t": HOUR + 605_000, "lat": last_lat, "lon": 13.0, "spd": 0.0}]
    )
    rollup(cloud)
    (hour,) = http_json(url, token=token)  # type: ignore[misc]
    assert hour["fixes"] == 92 and hour["distance_km"] == pytest.approx(6.0, rel=1e-3)


def test_retention_deletes_only_what_is_older(cloud: CloudStack) -> None:
    cloud.register_vehicle("Old van", "old-van")

    async def insert_old() -> None:
        conn = await asyncpg.connect(cloud.dsn)
        try:
            await conn.execute(
                """INSERT INTO positions (device_id, boot_id, seq, fix_time, recv_time, lat, lon)
                   VALUES ('old-van', 1, 1, now() - interval '400 days', now(), 52, 13),
                          ('old-van', 1, 2, now() - interval '10 days', now(), 52, 13)"""
            )
        finally:
            await conn.close()

    asyncio.run(insert_old())
    out = subprocess.run(
        [tool("fleet-cloud"), "retention", "--days", "365", "--dsn", cloud.dsn],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "rows deleted" in out
    assert cloud.stored_seqs("old-van") == [2]


def test_vehicles_near_a_point(cloud: CloudStack) -> None:
    near = cloud.register_vehicle("Near van", "near-van")
    far = cloud.register_vehicle("Far van", "far-van")
    import time

    now = int(time.time() * 1000) - 1000
    cloud.publish_fixes("near-van", [{"seq": 1, "t": now, "lat": 40.0010, "lon": -3.0}])
    cloud.publish_fixes("far-van", [{"seq": 1, "t": now, "lat": 40.2, "lon": -3.0}])
    found = http_json(
        f"{cloud.base_url}/api/v1/vehicles/near?lat=40.0&lon=-3.0&radius_km=5", token=cloud.token()
    )
    assert isinstance(found, list)
    ids = [f["vehicle_id"] for f in found]
    assert near in ids and far not in ids
    assert found[ids.index(near)]["distance_km"] == pytest.approx(0.111, abs=0.002)


def test_timescaledb_path(cloud: CloudStack) -> None:
    rows = db_fetch(cloud.dsn, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not rows:
        pytest.skip("the TimescaleDB extension is not installed on this PostgreSQL server")
    hyper = db_fetch(
        cloud.dsn, "SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1"
    )
    assert [r["hypertable_name"] for r in hyper] == ["engine_samples", "positions"]
