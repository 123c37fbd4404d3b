"""The evaluator alone (no database): hysteresis, minimum dwell, lowest speed limit."""

from __future__ import annotations

import random

from fleet_cloud.processing.evaluator import Evaluator, FixIn
from fleet_cloud.processing.geofences import Geofence, GeofenceIndex, GeofenceSpec
from fleet_cloud.processing.rules import RuleSet
from fleet_sim.geo import offset

LAT, LON = 52.52, 13.40
T0 = 1_767_225_600_000


def fence(**kw: object) -> Geofence:
    spec = GeofenceSpec(
        7, 1, "Yard", "circle", {"type": "Point", "coordinates": [LON, LAT]}, 200.0, **kw
    )  # type: ignore[arg-type]
    return Geofence.build(spec)


def at(i: int, dist_m: float, spd: float = 20.0) -> FixIn:
    lat, lon = offset(LAT, LON, dist_m, 90.0)
    return FixIn(f"d:1:{i}", T0 + i * 1000, lat, lon, spd)


def run(ev: Evaluator, dists: list[float], spd: float = 20.0) -> list[str]:
    for i, d in enumerate(dists):
        ev.feed(at(i, d, spd))
    return [e.type for e in ev.events if e.type.startswith("geofence_")]


def test_boundary_jitter_does_not_flap() -> None:
    """A vehicle parked on the edge, GPS wandering ±12 m (inside the 15 m band): nothing."""
    rng = random.Random(3)
    ev = Evaluator(1, None, RuleSet(), GeofenceIndex([fence()]))
    assert run(ev, [200 + rng.uniform(-12, 12) for _ in range(3600)], spd=0.0) == []


def test_enter_needs_min_dwell_and_exit_needs_the_band() -> None:
    ev = Evaluator(1, None, RuleSet(), GeofenceIndex([fence(min_dwell_s=10.0)]))
    # 5 s inside then out again: too short to count.
    assert run(ev, [400] * 5 + [150] * 5 + [400] * 20) == []
    ev = Evaluator(1, None, RuleSet(), GeofenceIndex([fence(min_dwell_s=10.0)]))
    dists = [400] * 5 + [150] * 30 + [205] * 30 + [260] * 30
    assert run(ev, dists) == ["geofence_enter", "geofence_exit"]
    enter, exit_ = [e for e in ev.events if e.type.startswith("geofence_")]
    assert enter.fix_key == "d:1:5" and enter.decided_t - enter.t == 10_000
    # 205 m is outside but within the band: the exit is the first fix at 260 m.
    assert exit_.fix_key == "d:1:65"


def test_overspeed_takes_the_lowest_limit_and_minimum_duration() -> None:
    rules = RuleSet()
    rules.apply("overspeed", True, None, {"limit_kmh": 50, "min_duration_s": 10})
    ev = Evaluator(1, None, rules, GeofenceIndex([fence(speed_limit_kmh=30.0)]))
    for i in range(8):  # 8 s at 45 inside the 30 zone: too short
        ev.feed(at(i, 0.0, 45.0))
    for i in range(8, 30):
        ev.feed(at(i, 0.0, 35.0 if i < 12 else 20.0))
    assert [e.type for e in ev.events if e.type == "overspeed"] == ["overspeed"]
    (o,) = [e for e in ev.events if e.type == "overspeed"]
    assert o.details["limit_kmh"] == 30.0 and o.fix_key == "d:1:0"
    # Outside the zone only the vehicle's own 50 applies: 45 is fine.
    ev = Evaluator(1, None, rules, GeofenceIndex([fence(speed_limit_kmh=30.0)]))
    for i in range(60):
        ev.feed(at(i, 1000.0, 45.0))
    assert not [e for e in ev.events if e.type == "overspeed"]


def test_a_deleted_geofence_is_forgotten() -> None:
    ev = Evaluator(1, None, RuleSet(), GeofenceIndex([fence()]))
    run(ev, [0.0] * 20)
    assert "7" in ev.st["geo"]
    ev2 = Evaluator(1, None, RuleSet(), GeofenceIndex([]), ev.st)
    ev2.feed(at(100, 5000.0))
    assert ev2.st["geo"] == {} and ev2.events == []


def drive_east(ev: Evaluator, start: int, n: int, kmh: float, ign: bool, x0: float) -> float:
    """n fixes 1 s apart moving east at kmh; returns the distance reached."""
    x = x0
    for i in range(n):
        x += kmh / 3.6
        lat, lon = offset(LAT, LON, x, 90.0)
        ev.feed(FixIn(f"d:1:{start + i}", T0 + (start + i) * 1000, lat, lon, kmh, {"ign": ign}))
    return x


def test_ignition_based_trips() -> None:
    rules = RuleSet()
    rules.apply("trips", True, None, {"use_ignition": True})
    ev = Evaluator(1, None, rules, GeofenceIndex([]))
    x = drive_east(ev, 0, 10, 0.0, False, 0.0)  # parked, engine off
    x = drive_east(ev, 10, 600, 40.0, True, x)  # ten minutes at 40 km/h
    drive_east(ev, 610, 30, 0.0, False, x)  # stops and switches off at once
    (trip,) = [s for s in ev.segments if s.kind == "trip"]
    assert trip.start_reason == "ignition_on" and trip.end_reason == "ignition_off"
    assert trip.end_t == T0 + 610 * 1000  # not 5 minutes later, as parking would be
    assert trip.stats["distance_m"] > 6000


def test_maintenance_by_engine_hours() -> None:
    rules = RuleSet()
    rules.apply("maintenance_due", True, None, {"every_engine_h": 0.01})  # every 36 s
    ev = Evaluator(1, None, rules, GeofenceIndex([]))
    drive_east(ev, 0, 100, 0.0, True, 0.0)
    keys = [e.rule_key for e in ev.events if e.type == "maintenance_due"]
    assert keys == ["h:0.01", "h:0.02"]


def test_group_scope() -> None:
    """A geofence attached to a vehicle group fires for members only."""
    g = fence(group_id=5)
    member = Evaluator(1, None, RuleSet(), GeofenceIndex([g]), groups=frozenset({5}))
    other = Evaluator(2, None, RuleSet(), GeofenceIndex([g]), groups=frozenset({6}))
    dists = [400] * 5 + [0] * 30
    assert run(member, dists) == ["geofence_enter"]
    assert run(other, dists) == []
