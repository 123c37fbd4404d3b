"""Every fix-derived event type on a recorded simulated drive; idempotency under replay."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import asyncpg
import pytest

from fleet_cloud.processing.service import Processor
from tests.processing.conftest import drain, events_of, new_vehicle, store
from tests.processing.drives import Drive
from tests.processing.scenario import configure, scenario_drive, summary

FIX_TYPES = {
    "geofence_enter", "geofence_exit", "geofence_dwell", "overspeed", "harsh_braking",
    "harsh_acceleration", "idling", "ignition_on", "ignition_off", "motion_start",
    "motion_stop", "low_battery", "dtc_new", "engine_temp_high", "fuel_drop", "refuel",
    "maintenance_due",
}  # fmt: skip


async def deliver_in_order(
    pool: asyncpg.Pool, proc: Processor, dev: str, vid: int, fixes: list[dict[str, Any]]
) -> None:
    for i in range(0, len(fixes), 60):
        await store(pool, dev, vid, fixes[i : i + 60])
        await drain(proc)


@pytest.fixture(scope="module")
def drive() -> Drive:
    return scenario_drive()


async def test_every_event_type(pool: asyncpg.Pool, processor: Processor, drive: Drive) -> None:
    tid, vid, dev = await new_vehicle(pool)
    async with pool.acquire() as conn:
        fence_ids = await configure(conn, tid, drive)
    await deliver_in_order(pool, processor, dev, vid, drive.fixes)
    evs = await events_of(pool, vid)
    types = Counter(e["type"] for e in evs)
    assert FIX_TYPES <= set(types), f"missing: {FIX_TYPES - set(types)}"
    assert not any(e["late"] for e in evs), "in-order delivery has nothing late"
    assert len({(e["type"], e["rule_key"], e["fix_key"]) for e in evs}) == len(evs)
    by_seq = {f["seq"]: f for f in drive.fixes}

    # Harsh events sit exactly on the injected fixes (speed 0 between fast ones).
    for e in evs:
        if e["type"].startswith("harsh_"):
            assert by_seq[int(e["fix_key"].rsplit(":", 1)[1])]["spd"] in (0.0,) or (
                e["type"] == "harsh_acceleration"
            )
    depot, customer, school = fence_ids
    # Overspeed takes the lowest applicable limit: 30 in the school corridor.
    zone_over = [e for e in evs if e["type"] == "overspeed" and e["details"]["limit_kmh"] == 30]
    assert zone_over
    assert all(e["details"]["speed_kmh"] > 30 for e in zone_over)
    # Enter/exit alternate per geofence, starting with an enter.
    for gid in fence_ids:
        seq = [e["type"] for e in evs if e["geofence_id"] == gid and e["type"] != "geofence_dwell"]
        assert seq, f"geofence {gid} never entered"
        assert seq[0] == "geofence_enter"
        assert all(a != b for a, b in itertools.pairwise(seq)), seq
    dwell = [e for e in evs if e["type"] == "geofence_dwell"]
    assert [e["geofence_id"] for e in dwell] == [depot]
    # The depot was entered before the long park and left when driving off.
    park_start = drive.drives[0][1] + 420_000
    assert any(
        e["type"] == "geofence_enter" and e["geofence_id"] == depot
        and e["fix_time"].timestamp() * 1000 < park_start
        for e in evs
    )  # fmt: skip
    ign_off = [e for e in evs if e["type"] == "ignition_off"]
    assert int(ign_off[0]["fix_time"].timestamp() * 1000) == park_start + 60_000
    assert [e["rule_key"] for e in evs if e["type"] == "dtc_new"] == ["P0301"]
    assert [e["rule_key"] for e in evs if e["type"] == "maintenance_due"][:2] == ["km:10", "km:20"]
    assert {e["severity"] for e in evs if e["type"] == "engine_temp_high"} == {"critical"}
    assert customer and school


async def test_replay_never_fires_twice(
    pool: asyncpg.Pool, processor: Processor, drive: Drive
) -> None:
    tid, vid, dev = await new_vehicle(pool)
    async with pool.acquire() as conn:
        await configure(conn, tid, drive)
    await deliver_in_order(pool, processor, dev, vid, drive.fixes)
    before = await events_of(pool, vid, with_retracted=True)

    # The device resends everything (lost acks): stored once, nothing new.
    assert await store(pool, dev, vid, drive.fixes[:500]) == 0
    await drain(processor)
    # The processing stage itself replays everything (checkpoint lost).
    await pool.execute("UPDATE processing_checkpoint SET high_seq = 0, holes = '[]'")
    await drain(processor)
    after = await events_of(pool, vid, with_retracted=True)
    assert summary(after) == summary(before)
    assert [e["id"] for e in after] == [e["id"] for e in before]
    assert not any(e["retracted_at"] for e in after)
    assert processor.counters["replays"] >= 1


async def test_throttle_per_rule_per_hour(pool: asyncpg.Pool, processor: Processor) -> None:
    """Ignition toggling every minute: 10 alerts an hour, the rest stored as throttled."""
    _, vid, dev = await new_vehicle(pool)
    t0 = 1_767_312_000_000
    fixes = [
        {"seq": i + 1, "t": t0 + i * 60_000, "lat": 48.1, "lon": 11.5, "spd": 0.0,
         "eng": {"ign": i % 2 == 0}}
        for i in range(60)
    ]  # fmt: skip
    await store(pool, dev, vid, fixes)
    await drain(processor)
    evs = [e for e in await events_of(pool, vid) if e["type"] == "ignition_on"]
    assert len(evs) == 29
    assert sum(not e["throttled"] for e in evs) <= 10 * 2  # two hours of fix time
    first_hour = [e for e in evs if e["fix_time"].timestamp() * 1000 < t0 + 3_600_000]
    assert sum(not e["throttled"] for e in first_hour) == 10
    assert all(e["notify_status"] == "throttled" for e in evs if e["throttled"])


async def test_group_geofence_through_processing(pool: asyncpg.Pool, processor: Processor) -> None:
    tid, member, d_member = await new_vehicle(pool, "group-tenant")
    _, other, d_other = await new_vehicle(pool, "group-tenant")
    gid = await pool.fetchval(
        "INSERT INTO vehicle_groups (tenant_id, name) VALUES ($1, 'Night shift') RETURNING id", tid
    )
    await pool.execute("INSERT INTO vehicle_group_members VALUES ($1, $2)", gid, member)
    await pool.execute(
        """INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m, group_id)
           VALUES ($1, 'Gate', 'circle', $2, 100, $3)""",
        tid, {"type": "Point", "coordinates": [11.5, 48.1]}, gid,
    )  # fmt: skip
    t0 = 1_767_600_000_000
    fixes = [{"seq": i + 1, "t": t0 + i * 1000, "lat": 48.1, "lon": 11.5 + (0.01 if i < 5 else 0),
              "spd": 0.0} for i in range(40)]  # fmt: skip
    await store(pool, d_member, member, fixes)
    await store(pool, d_other, other, fixes)
    await drain(processor)
    assert [e["type"] for e in await events_of(pool, member) if e["geofence_id"]] == [
        "geofence_enter"
    ]
    assert [e for e in await events_of(pool, other) if e["geofence_id"]] == []
