"""Trips and stops on drives whose truth is known: the plan says where the trips are,
the simulator's exact speed says where each one starts, ends and how far it went."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from fleet_cloud.processing.service import Processor
from tests.processing.conftest import drain, new_vehicle, store
from tests.processing.drives import Drive, build


def truth(d: Drive) -> list[tuple[int, int, float]]:
    """(first moving fix, first fix of the final standstill, metres) per driving phase."""
    out = []
    for start, end, dist in d.drives:
        phase = [f for f in d.fixes if start <= f["t"] <= end]
        moving = [i for i, f in enumerate(phase) if f["spd"] >= 5.0]
        last = moving[-1]
        stand = next(f for f in phase[last + 1 :] if f["spd"] < 5.0)
        out.append((phase[moving[0]]["t"], stand["t"], dist))
    return out


def assert_no_long_stand(d: Drive) -> None:
    """Precondition: inside a driving phase the simulator never stood >= 5 min."""
    for start, end, _ in d.drives:
        still_since = None
        for f in (f for f in d.fixes if start <= f["t"] <= end):
            if f["spd"] < 5.0:
                still_since = still_since or f["t"]
                assert f["t"] - still_since < 300_000, "seed parks inside a drive: pick another"
            else:
                still_since = None


async def run(pool: asyncpg.Pool, proc: Processor, d: Drive) -> tuple[list, list]:
    _, vid, dev = await new_vehicle(pool)
    for i in range(0, len(d.fixes), 200):
        await store(pool, dev, vid, d.fixes[i : i + 200])
        await drain(proc)
    trips = await pool.fetch("SELECT * FROM trips WHERE vehicle_id = $1 ORDER BY start_time", vid)
    stops = await pool.fetch("SELECT * FROM stops WHERE vehicle_id = $1 ORDER BY start_time", vid)
    return [dict(r) for r in trips], [dict(r) for r in stops]


def ms(dt: object) -> int:
    return int(dt.timestamp() * 1000)  # type: ignore[attr-defined]


async def test_trips_match_the_plan(pool: asyncpg.Pool, processor: Processor) -> None:
    d = build(
        [("drive", 900), ("park", 900), ("drive", 1200), ("park", 1200), ("drive", 600),
         ("idle", 120), ("drive", 600), ("park", 600)],
        seed=3,
    )  # fmt: skip
    assert_no_long_stand(d)
    trips, stops = await run(pool, processor, d)
    want = truth(d)
    # The short idle (2 min, engine on) does not split the third trip.
    want = [want[0], want[1], (want[2][0], want[3][1], want[2][2] + want[3][2])]
    assert len(trips) == len(want), [(t["start_time"], t["end_time"]) for t in trips]
    for t, (s, e, dist) in zip(trips, want, strict=True):
        assert abs(ms(t["start_time"]) - s) <= 10_000
        assert abs(ms(t["end_time"]) - e) <= 10_000
        assert abs(t["distance_m"] - dist) <= 0.03 * dist, (t["distance_m"], dist)
        assert (t["start_reason"], t["end_reason"]) in (
            ("motion", "parked"),
            ("first_fix", "parked"),
        )
        assert 0 <= t["score"] <= 100
    # Fuel from MAF: the integral of g/s over the trip, stoichiometric petrol.
    for t in trips:
        s0, s1 = ms(t["start_time"]), ms(t["end_time"])
        inside = [f for f in d.fixes if s0 <= f["t"] <= s1]
        grams = sum(
            b["eng"]["maf"] * (b["t"] - a["t"]) / 1000 for a, b in itertools.pairwise(inside)
        )
        assert t["fuel_source"] == "maf"
        assert t["fuel_l"] == pytest.approx(grams / 14.7 / 745.0, rel=0.05)
    # Stops fill the time between trips, each boundary with its reason.
    for a, b in itertools.pairwise(trips):
        stop = next(s for s in stops if s["start_time"] == a["end_time"])
        assert stop["end_time"] == b["start_time"]
        assert (stop["start_reason"], stop["end_reason"]) == ("parked", "motion")
    # Odometer continuity.
    for a, b in itertools.pairwise(trips):
        assert b["odometer_start_km"] >= a["odometer_end_km"] - 1e-6


async def test_no_data_gap_ends_a_trip(pool: asyncpg.Pool, processor: Processor) -> None:
    d = build([("drive", 900), ("gap", 7200), ("drive", 900), ("park", 600)], seed=3)
    trips, _ = await run(pool, processor, d)
    assert len(trips) == 2
    assert trips[0]["end_reason"] == "no_data"
    assert abs(ms(trips[0]["end_time"]) - d.drives[0][1]) <= 1000
    assert trips[1]["end_reason"] == "parked"


async def test_short_hop_is_not_a_trip(pool: asyncpg.Pool, processor: Processor) -> None:
    """Moving the van 2 minutes across the yard is below the minimum trip duration."""
    d = build([("park", 600), ("drive", 100), ("park", 900)], seed=3)
    trips, stops = await run(pool, processor, d)
    assert trips == []
    assert len(stops) == 1 and stops[0]["end_time"] is None
