"""The route model drives like a vehicle: limits, physics, stops, determinism."""

from __future__ import annotations

import itertools
import statistics

import pytest

from fleet_sim.geo import haversine_m
from fleet_sim.route import (
    BERLIN,
    BRAKE_MAX_MS2,
    CITY_RADIUS_M,
    NO_FIX_HDOP,
    RouteSim,
    SimFix,
)

START = 1_732_177_200_000
HOUR = 3600


def drive(seed: int, seconds: int, hz: int = 1) -> tuple[list[SimFix], list[int]]:
    """Fixes and the speed limit of the road the vehicle was on at each."""
    sim = RouteSim(seed, hz, START)
    fixes, limits = [], []
    for _ in range(seconds * hz):
        fixes.append(sim.step())
        limits.append(sim.segment_limit_kmh)
    return fixes, limits


@pytest.fixture(scope="module")
def hour() -> dict[int, tuple[list[SimFix], list[int]]]:
    return {seed: drive(seed, HOUR) for seed in (1, 2, 3, 42)}


def test_same_seed_same_drive() -> None:
    assert drive(7, 300)[0] == drive(7, 300)[0]


def test_different_seeds_different_drives() -> None:
    a, b = drive(7, 60)[0], drive(8, 60)[0]
    assert haversine_m(a[0].lat, a[0].lon, b[0].lat, b[0].lon) > 10


def test_fleet_spreads_over_the_city() -> None:
    starts = [RouteSim(seed, 1, START).step() for seed in range(50)]
    dists = [haversine_m(BERLIN[0], BERLIN[1], f.lat, f.lon) for f in starts]
    # Loop centres lie within CITY_RADIUS_M, loops reach ~3 km beyond.
    assert max(dists) < CITY_RADIUS_M + 3_500
    assert statistics.median(dists) > 1_500  # not all piled up in the centre
    close_pairs = sum(
        haversine_m(a.lat, a.lon, b.lat, b.lon) < 200 for a, b in itertools.combinations(starts, 2)
    )
    assert close_pairs <= 5


def test_times_are_epochs() -> None:
    sim = RouteSim(1, 3, START + 3)  # rounded up to 10 ms
    times = [sim.step().t_ms for _ in range(30)]
    assert times[0] == START + 10
    assert all(t % 10 == 0 for t in times)
    assert times[3] - times[0] == 1000  # whole seconds stay aligned
    assert all(320 <= b - a <= 340 for a, b in itertools.pairwise(times))


def test_speed_never_above_the_road_limit(hour: dict[int, tuple[list[SimFix], list[int]]]) -> None:
    for fixes, limits in hour.values():
        for fix, limit in zip(fixes, limits, strict=True):
            assert 0.0 <= fix.speed_kmh <= limit + 1e-9
        assert max(f.speed_kmh for f in fixes) > 25  # and it does actually drive


def test_acceleration_within_vehicle_limits(
    hour: dict[int, tuple[list[SimFix], list[int]]],
) -> None:
    for fixes, _ in hour.values():
        for a, b in itertools.pairwise(fixes):
            dv = (b.speed_kmh - a.speed_kmh) / 3.6
            dt = (b.t_ms - a.t_ms) / 1000
            # The last half metre per second at the stop line ends in one step.
            assert -BRAKE_MAX_MS2 * dt - 0.5 <= dv <= 2.3 * dt + 1e-9


def test_distance_between_fixes_matches_speed(
    hour: dict[int, tuple[list[SimFix], list[int]]],
) -> None:
    for fixes, _ in hour.values():
        for a, b in itertools.pairwise(fixes):
            if not (a.fix_type and b.fix_type):
                continue
            d = haversine_m(a.lat, a.lon, b.lat, b.lon)
            dt = (b.t_ms - a.t_ms) / 1000
            hi = max(a.speed_kmh, b.speed_kmh) / 3.6 * dt
            lo = min(a.speed_kmh, b.speed_kmh) / 3.6 * dt
            noise = 4.0  # a few metres of slowly wandering GNSS error
            assert d <= hi + noise
            assert d >= 0.7 * lo - noise  # cutting a corner shortens the chord


def test_heading_follows_the_path(hour: dict[int, tuple[list[SimFix], list[int]]]) -> None:
    from fleet_sim.geo import bearing_deg

    checked = 0
    for fixes, _ in hour.values():
        for a, b in itertools.pairwise(fixes):
            moving = a.speed_kmh > 30 and b.speed_kmh > 30 and a.fix_type and b.fix_type
            if moving and a.heading_deg == b.heading_deg:
                course = bearing_deg(a.lat, a.lon, b.lat, b.lon)
                diff = abs((course - b.heading_deg + 180) % 360 - 180)
                assert diff < 25  # noise over ~10 m of travel
                checked += 1
    assert checked > 500


def test_stops_at_lights_and_parks(hour: dict[int, tuple[list[SimFix], list[int]]]) -> None:
    for fixes, _ in hour.values():
        stops: list[int] = []
        run = 0
        for a, b in itertools.pairwise(fixes):
            if b.speed_kmh == 0.0:
                run += 1
            elif run:
                stops.append(run)
                run = 0
            del a
        short = [s for s in stops if s <= 60]
        assert len(short) >= 3  # red lights
        assert all(s <= 15 * 60 + 2 for s in stops)  # nobody parks forever
    longest = max(
        max(
            (len(list(g)) for k, g in itertools.groupby(f.speed_kmh == 0.0 for f in fixes) if k),
            default=0,
        )
        for fixes, _ in hour.values()
    )
    assert longest >= 120  # someone parked in an hour of four vehicles


def test_receiver_values_are_plausible(hour: dict[int, tuple[list[SimFix], list[int]]]) -> None:
    for fixes, _ in hour.values():
        for f in fixes:
            assert f.fix_type in (0, 2, 3)
            assert 0.0 <= f.heading_deg < 360.0
            if f.fix_type:
                assert 4 <= f.sats <= 14
                assert 0.5 <= f.hdop <= 5.0
                assert 10.0 < f.alt_m < 90.0
            else:
                assert f.hdop == NO_FIX_HDOP
        assert sum(f.fix_type == 3 for f in fixes) > 0.9 * len(fixes)


def test_ten_hz_is_smooth() -> None:
    fixes, limits = drive(5, 120, hz=10)
    assert all(b.t_ms - a.t_ms == 100 for a, b in itertools.pairwise(fixes))
    assert all(f.speed_kmh <= lim + 1e-9 for f, lim in zip(fixes, limits, strict=True))
    for a, b in itertools.pairwise(fixes):
        if a.fix_type and b.fix_type:
            assert haversine_m(a.lat, a.lon, b.lat, b.lon) <= max(a.speed_kmh, b.speed_kmh) / 36 + 2


def test_slow_rate_still_drives_physically() -> None:
    sim = RouteSim(9, 0.1, START)
    fixes = [sim.step() for _ in range(60)]
    assert all(b.t_ms - a.t_ms == 10_000 for a, b in itertools.pairwise(fixes))
    assert all(f.speed_kmh <= 100 for f in fixes)
    assert any(f.speed_kmh > 0 for f in fixes)


def test_rejects_nonsense_rate() -> None:
    with pytest.raises(ValueError, match="hz"):
        RouteSim(1, 0)
