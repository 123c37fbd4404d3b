"""Harsh braking, acceleration and cornering judged on accelerometer peaks.

A device with an IMU sends, with each fix, the peaks since the previous one
(fleet_wire.models.Imu). Those fixes go through the ingest's own batch writer
and the processing stage; the events must sit on the fixes whose peaks crossed
the thresholds, name the accelerometer as their source, and a speed step that
the speed-delta rule would call harsh must not fire a second event for a fix
whose accelerometer saw nothing violent.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from fleet_cloud.processing.service import Processor
from fleet_sim.geo import offset
from tests.processing.conftest import drain, events_of, new_vehicle, store

LAT, LON = 48.137, 11.575


def imu_drive(t0: int) -> list[dict[str, Any]]:
    """Two minutes east at 50 km/h, one fix every 2 s, mild IMU peaks except
    on the three manoeuvres; fix 40 reports 0 km/h (a GPS speed glitch) while
    the accelerometer stays calm."""
    fixes = []
    for i in range(60):
        lat, lon = offset(LAT, LON, i * 27.8, 90.0)
        imu: dict[str, float] = {"ax_min": -0.8, "ax_max": 0.6, "ay_max": 0.5}
        if i == 10:
            imu["ax_min"] = -6.2  # emergency stop
        if i == 20:
            imu["ax_max"] = 4.1  # hard launch
        if i == 30:
            imu["ay_max"] = 5.3  # fast corner
        fixes.append({
            "seq": i + 1, "t": t0 + i * 2000, "lat": lat, "lon": lon,
            "spd": 0.0 if i == 40 else 50.0, "imu": imu,
        })  # fmt: skip
    return fixes


async def test_harsh_events_from_accelerometer_peaks(
    pool: asyncpg.Pool, processor: Processor
) -> None:
    _, vid, dev = await new_vehicle(pool)
    fixes = imu_drive(int(time.time() * 1000) - 600_000)
    await store(pool, dev, vid, fixes)
    await drain(processor)

    harsh = [e for e in await events_of(pool, vid) if e["type"].startswith("harsh_")]
    got = {(e["type"], int(e["fix_key"].rsplit(":", 1)[1])) for e in harsh}
    assert got == {("harsh_braking", 11), ("harsh_acceleration", 21), ("harsh_cornering", 31)}
    assert all(e["details"]["source"] == "accelerometer" for e in harsh)
    by_type = {e["type"]: e["details"]["accel_ms2"] for e in harsh}
    assert by_type == {"harsh_braking": -6.2, "harsh_acceleration": 4.1, "harsh_cornering": 5.3}

    # The IMU peaks are stored with the fix, as sent.
    row = await pool.fetchrow("SELECT imu FROM positions WHERE device_id = $1 AND seq = 11", dev)
    assert row is not None and row["imu"] == {"ax_min": -6.2, "ax_max": 0.6, "ay_max": 0.5}

    # Replaying the same fixes neither stores nor fires anything twice.
    assert await store(pool, dev, vid, fixes) == 0
    await drain(processor)
    again = [e for e in await events_of(pool, vid) if e["type"].startswith("harsh_")]
    assert len(again) == 3


async def test_without_imu_speed_deltas_still_decide(
    pool: asyncpg.Pool, processor: Processor
) -> None:
    """The same drive without accelerometer values: the 50 -> 0 km/h step in
    2 s is harsh braking by speed delta (and 0 -> 50 a harsh launch)."""
    _, vid, dev = await new_vehicle(pool)
    fixes = imu_drive(int(time.time() * 1000) - 600_000)
    for f in fixes:
        del f["imu"]
    await store(pool, dev, vid, fixes)
    await drain(processor)
    harsh = [e for e in await events_of(pool, vid) if e["type"].startswith("harsh_")]
    got = {(e["type"], int(e["fix_key"].rsplit(":", 1)[1])) for e in harsh}
    assert got == {("harsh_braking", 41), ("harsh_acceleration", 42)}
    assert all(e["details"]["source"] == "speed" for e in harsh)
