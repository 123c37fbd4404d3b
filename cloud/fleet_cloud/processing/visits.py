"""Planned visits: arrival and departure at route stops, skipped and failed stops,
route deviation. Part of the deterministic per-vehicle evaluation (state in the
evaluator's JSON state), so late data re-derives visits like everything else.

Life cycle of a stop: planned -> arrived (inside its circle, beyond the
hysteresis band, for ARRIVE_CONFIRM_S) -> in_progress (inside for the stop's
min_dwell_s) -> completed (left after being in progress). Leaving while only
"arrived" was a drive-by: back to planned. A planned stop becomes skipped
when a later stop of the route is arrived at, failed when its time window
ends first.

The planned path is the straight line through the stops (no road router
here), so route_deviation means "further than corridor_m from that line".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry import LineString, Point

from fleet_cloud.processing.geo import LocalPlane, haversine_m

ARRIVE_CONFIRM_S = 10.0
HYSTERESIS_M = 10.0
DEVIATION_CONFIRM_S = 30.0
DEVIATION_BACK_M = 50.0  # back on route when this far inside the corridor
TERMINAL = ("completed", "skipped", "failed")


@dataclass(frozen=True, slots=True)
class StopPlan:
    id: int
    seq: int
    name: str
    lat: float
    lon: float
    radius_m: float
    window_start: int | None  # UTC ms
    window_end: int | None
    min_dwell_s: float


@dataclass(slots=True)
class RoutePlan:
    id: int
    name: str
    start: int  # UTC ms
    end: int
    corridor_m: float
    stops: list[StopPlan]
    plane: LocalPlane | None = None
    path: LineString | None = field(default=None)

    def __post_init__(self) -> None:
        self.stops.sort(key=lambda s: s.seq)
        if len(self.stops) >= 2:
            lat0 = sum(s.lat for s in self.stops) / len(self.stops)
            lon0 = sum(s.lon for s in self.stops) / len(self.stops)
            self.plane = LocalPlane(lat0, lon0)
            self.path = LineString([self.plane.to_xy(s.lat, s.lon) for s in self.stops])


# emit(rule, first_fix_ref, rule_key, **details)
Emit = Callable[..., None]


def track(st: dict[str, Any], routes: list[RoutePlan], ref: dict[str, Any], emit: Emit) -> None:
    """Advance visit and deviation states of every route active at this fix."""
    t = ref["t"]
    visits: dict[str, Any] = st.setdefault("visits", {})
    devs: dict[str, Any] = st.setdefault("dev", {})
    # Forget routes that are no longer loaded (over, or deleted): the state must
    # not grow with every route a vehicle ever drove. Snapshots keep the old
    # entries, so a re-evaluation of that time still has them.
    stops = {str(s.id) for r in routes for s in r.stops}
    for k in [k for k in visits if k not in stops]:
        del visits[k]
    ids = {str(r.id) for r in routes}
    for k in [k for k in devs if k not in ids]:
        del devs[k]
    for route in routes:
        if not route.start <= t <= route.end:
            continue
        for stop in route.stops:
            vs = visits.setdefault(
                str(stop.id), {"s": "planned", "cand": None, "arr": None, "dep": None}
            )
            if vs["s"] in TERMINAL:
                continue
            _stop(vs, stop, route, visits, ref, emit)
        _deviation(devs, route, visits, ref, emit)


def _stop(
    vs: dict[str, Any],
    stop: StopPlan,
    route: RoutePlan,
    visits: dict[str, Any],
    ref: dict[str, Any],
    emit: Emit,
) -> None:
    t = ref["t"]
    d = haversine_m(ref["lat"], ref["lon"], stop.lat, stop.lon) - stop.radius_m
    inside = vs["s"] in ("arrived", "in_progress")
    if vs["s"] == "arrived" and t - vs["arr"] >= stop.min_dwell_s * 1000:
        vs["s"] = "in_progress"
    crossing = d >= HYSTERESIS_M if inside else d <= -HYSTERESIS_M
    if not crossing:
        vs["cand"] = None
    else:
        if vs["cand"] is None:
            vs["cand"] = ref
        if t - vs["cand"]["t"] >= ARRIVE_CONFIRM_S * 1000:
            first = vs["cand"]
            vs["cand"] = None
            if not inside:
                vs["s"], vs["arr"] = "arrived", first["t"]
                emit("visit_arrived", first, str(stop.id), stop=stop.name, route=route.name)
                for other in route.stops:  # earlier stops never visited are skipped
                    o = visits.get(str(other.id))
                    if other.seq < stop.seq and (o is None or o["s"] == "planned"):
                        visits[str(other.id)] = {
                            "s": "skipped", "cand": None, "arr": None, "dep": None
                        }  # fmt: skip
                        emit("visit_skipped", first, str(other.id), stop=other.name,
                             route=route.name)  # fmt: skip
            elif vs["s"] == "in_progress":
                vs["s"], vs["dep"] = "completed", first["t"]
                emit("visit_completed", first, str(stop.id), stop=stop.name, route=route.name,
                     service_s=(first["t"] - vs["arr"]) / 1000.0)  # fmt: skip
                return
            else:
                vs["s"], vs["arr"] = "planned", None  # a drive-by, not a visit
    if vs["s"] == "planned" and stop.window_end is not None and t > stop.window_end:
        vs["s"] = "failed"
        emit("visit_failed", ref, str(stop.id), stop=stop.name, route=route.name,
             reason="time window ended")  # fmt: skip


def _deviation(
    devs: dict[str, Any],
    route: RoutePlan,
    visits: dict[str, Any],
    ref: dict[str, Any],
    emit: Emit,
) -> None:
    if route.path is None or route.plane is None:
        return
    if all(visits.get(str(s.id), {}).get("s") in TERMINAL for s in route.stops):
        return  # route done
    ds = devs.setdefault(str(route.id), {"off": False, "cand": None})
    x, y = route.plane.to_xy(ref["lat"], ref["lon"])
    d = float(route.path.distance(Point(x, y))) - route.corridor_m
    crossing = d > 0 if not ds["off"] else d < -DEVIATION_BACK_M
    if not crossing:
        ds["cand"] = None
        return
    if ds["cand"] is None:
        ds["cand"] = ref
    if ref["t"] - ds["cand"]["t"] >= DEVIATION_CONFIRM_S * 1000:
        first = ds["cand"]
        ds["cand"] = None
        ds["off"] = not ds["off"]
        if ds["off"]:
            emit("route_deviation", first, str(route.id), route=route.name,
                 corridor_m=route.corridor_m)  # fmt: skip


def next_stop_eta(st: dict[str, Any], route: RoutePlan) -> tuple[int, int] | None:
    """(stop id, ETA in UTC ms) of the route's next planned stop, from the remaining
    straight-line distance and the recent moving speed; None when nothing is next."""
    last = st.get("last")
    if last is None or not route.start <= last["t"] <= route.end:
        return None
    visits = st.get("visits", {})
    for stop in route.stops:
        s = visits.get(str(stop.id), {}).get("s", "planned")
        if s in ("arrived", "in_progress"):
            return None  # at a stop now
        if s == "planned":
            remaining = haversine_m(last["lat"], last["lon"], stop.lat, stop.lon) - stop.radius_m
            kmh = max(15.0, float(st.get("spd_ema") or 0.0))
            return stop.id, int(last["t"] + max(0.0, remaining) / (kmh / 3.6) * 1000)
    return None
