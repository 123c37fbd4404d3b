"""Sampler rules: min interval, heartbeat, distance, heading change."""

from __future__ import annotations

import pytest

from fleet_edge.config import SamplerConfig
from fleet_edge.geo import haversine_m, heading_delta_deg
from fleet_edge.gps.fix import GpsFix
from fleet_edge.sampler import Sampler

T0 = 1_715_949_319_000
CFG = SamplerConfig(
    min_interval_s=5,
    max_interval_s=60,
    min_distance_m=100,
    heading_change_deg=30,
    heading_min_speed_kmh=5,
)
# ~1.11 m per 0.00001 degree of latitude
M_PER_DEG_LAT = 111_195.0


def fix(
    dt_s: float, north_m: float = 0.0, course: float | None = 90.0, kmh: float = 40.0
) -> GpsFix:
    return GpsFix(
        t=T0 + int(dt_s * 1000),
        lat=48.0 + north_m / M_PER_DEG_LAT,
        lon=11.0,
        speed_kmh=kmh,
        course_deg=course,
    )


def test_geo_helpers() -> None:
    assert haversine_m(48.0, 11.0, 48.0 + 100 / M_PER_DEG_LAT, 11.0) == pytest.approx(100, abs=0.5)
    # Paris -> London, a known ~343.5 km
    assert haversine_m(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343_560, rel=2e-3)
    assert heading_delta_deg(350, 10) == 20
    assert heading_delta_deg(10, 350) == 20
    assert heading_delta_deg(0, 180) == 180


def test_first_fix_always_recorded() -> None:
    assert Sampler(CFG).accept(fix(0))


def test_min_interval_blocks_even_a_big_move() -> None:
    s = Sampler(CFG)
    s.accept(fix(0))
    assert not s.accept(fix(4.9, north_m=1000))
    assert s.accept(fix(5, north_m=1000))


def test_heartbeat_while_parked() -> None:
    s = Sampler(CFG)
    s.accept(fix(0, kmh=0))
    recorded = [t for t in range(1, 200) if s.accept(fix(t, north_m=1.0, kmh=0))]
    assert recorded == [60, 120, 180]


def test_distance_measured_from_last_recorded_fix() -> None:
    s = Sampler(CFG)
    s.accept(fix(0))
    # 30 m per 5 s: slow drift accumulates until 100 m from the last recorded point.
    got = [t for t in range(5, 60, 5) if s.accept(fix(t, north_m=6.0 * t))]
    assert got == [20, 40]  # 120 m, then 240 m (120 m from 120)


def test_heading_change_when_moving() -> None:
    s = Sampler(CFG)
    s.accept(fix(0, course=90))
    assert not s.accept(fix(10, course=110))  # 20 deg
    assert s.accept(fix(11, course=125))  # 35 deg from the recorded 90
    assert not s.accept(fix(20, course=130))
    assert s.accept(fix(21, course=90))  # turns back: -35


def test_heading_noise_ignored_when_slow_or_unknown() -> None:
    # 2 -> 40 km/h would be a start-moving event (recorded at once): not this test's subject.
    s = Sampler(CFG.model_copy(update={"on_motion": False}))
    s.accept(fix(0, course=0, kmh=0))
    assert not s.accept(fix(10, course=180, kmh=2))
    assert not s.accept(fix(20, course=None))


def test_duplicate_and_backwards_time() -> None:
    s = Sampler(CFG)
    s.accept(fix(10))
    assert not s.accept(fix(10, north_m=500))  # same epoch again
    assert s.accept(fix(0))  # clock went back: restart from here
    assert not s.accept(fix(1))
    assert s.stats.seen == 4 and s.stats.recorded == 2


def test_zero_min_interval_with_zero_distance_records_every_epoch() -> None:
    s = Sampler(SamplerConfig(min_interval_s=0, min_distance_m=0))
    assert all(s.accept(fix(t)) for t in range(10))
