"""Sampler events: ignition on/off and start/stop moving are recorded at once."""

from __future__ import annotations

from fleet_edge.config import SamplerConfig
from fleet_edge.gps.fix import GpsFix
from fleet_edge.sampler import IGNITION_OFF, IGNITION_ON, START_MOVING, STOP_MOVING, Sampler

T0 = 1_795_000_000_000
# Long min interval and distance: only events (and the heartbeat) record anything.
CFG = SamplerConfig(min_interval_s=30, max_interval_s=600, min_distance_m=10_000)


def fix(dt_s: float, kmh: float | None) -> GpsFix:
    return GpsFix(t=T0 + int(dt_s * 1000), lat=48.0, lon=11.0, speed_kmh=kmh)


def test_ignition_changes_are_recorded_immediately() -> None:
    s = Sampler(CFG)
    assert s.accept(fix(0, 0), ignition=False)  # first fix
    assert not s.accept(fix(1, 0), ignition=False)
    assert s.accept(fix(2, 0), ignition=True) and s.last_event == IGNITION_ON
    assert not s.accept(fix(3, 0), ignition=True)
    assert not s.accept(fix(4, 0), ignition=None)  # unknown (OBD unplugged): no event
    assert s.accept(fix(5, 0), ignition=False) and s.last_event == IGNITION_OFF
    assert s.stats.events == {IGNITION_ON: 1, IGNITION_OFF: 1}


def test_start_and_stop_moving_with_hysteresis() -> None:
    s = Sampler(CFG)
    assert s.accept(fix(0, 0))
    assert s.moving is False
    assert not s.accept(fix(1, 5))  # between the thresholds: still stopped
    assert s.accept(fix(2, 12)) and s.last_event == START_MOVING
    assert not s.accept(fix(3, 2))  # slow, but only for a moment
    assert not s.accept(fix(4, 20))
    for t in range(5, 14):
        assert not s.accept(fix(t, 1))  # slow for 9 s: not yet stopped
    assert s.accept(fix(15, 0.5)) and s.last_event == STOP_MOVING  # 10 s slow
    assert s.moving is False
    assert s.stats.events == {START_MOVING: 1, STOP_MOVING: 1}


def test_events_can_be_switched_off() -> None:
    s = Sampler(CFG.model_copy(update={"on_ignition": False, "on_motion": False}))
    s.accept(fix(0, 0), ignition=False)
    assert not s.accept(fix(1, 50), ignition=True)
    assert not s.accept(fix(20, 0), ignition=False)
    assert s.stats.events == {}


def test_no_speed_no_motion_event() -> None:
    s = Sampler(CFG)
    s.accept(fix(0, 0))
    assert not s.accept(fix(1, None))
    assert s.moving is False
