"""The per-vehicle state machine: fixes in fix-time order in, events and trips out.

Pure and deterministic: the same fixes in the same order from the same state
give the same events, keyed by the fix that caused them. That is what makes
late data safe: the runner re-evaluates a window from an earlier snapshot of
this state and the outcome equals an in-order run. The state is a plain JSON
dict so snapshots can be stored in PostgreSQL.

Nothing here reads the wall clock; throttling counts alerts per hour of fix
time for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_cloud.processing.geo import haversine_m
from fleet_cloud.processing.geofences import GeofenceIndex
from fleet_cloud.processing.rules import RuleSet
from fleet_cloud.processing.visits import RoutePlan, track

MAX_PLAUSIBLE_KMH = 300.0  # a jump faster than this is noise, not distance
AFR_PETROL = 14.7  # stoichiometric air/fuel mass ratio
PETROL_G_PER_L = 745.0
MAX_INTEGRATE_GAP_S = 300.0  # engine hours / overspeed time are not integrated over gaps


@dataclass(frozen=True, slots=True)
class FixIn:
    key: str  # "device:boot:seq": stable identity of the fix
    t: int  # fix time, UTC ms
    lat: float
    lon: float
    speed: float | None = None  # km/h
    eng: dict[str, Any] | None = None
    imu: dict[str, Any] | None = None  # accelerometer peaks (fleet_wire.models.Imu), m/s²

    @property
    def ign(self) -> bool | None:
        if self.eng is None:
            return None
        v = self.eng.get("ign")
        if v is None and self.eng.get("rpm") is not None:
            return bool(self.eng["rpm"] > 0)
        return None if v is None else bool(v)


@dataclass(slots=True)
class EventOut:
    type: str
    rule_key: str
    fix_key: str  # the fix the event is about (idempotency key)
    t: int  # its fix time
    decided_t: int  # fix time of the fix that settled it (>= t)
    severity: str
    lat: float | None
    lon: float | None
    throttled: bool = False
    geofence_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.type, self.rule_key, self.fix_key)


@dataclass(slots=True)
class SegmentOut:
    """A trip or stop, open (end None) or closed."""

    kind: str  # "trip" | "stop"
    start_t: int
    lat: float
    lon: float
    start_reason: str
    end_t: int | None = None
    end_lat: float | None = None
    end_lon: float | None = None
    end_reason: str | None = None
    decided_t: int = 0  # fix time of the fix that closed it (open: the newest fix)
    stats: dict[str, Any] = field(default_factory=dict)


def new_state() -> dict[str, Any]:
    return {
        "last": None,  # {"t","lat","lon","spd","key"}
        "odo_m": 0.0,
        "engine_s": 0.0,
        "geo": {},  # fence id -> {"in": bool, "cand": {...}|None, "since": t, "dwell_fired": bool}
        "over": None,  # {"t","key","lat","lon","max","limit","fired"}
        "idle": None,  # {"t","key","lat","lon","fired"}
        "ign": None,
        "motion": {"moving": False, "cand": None},
        "batt": {"low": False, "cand": None},
        "temp_high": False,
        "dtc": [],
        "fuel": [],  # [[t, pct], ...] within the window
        "maint": {},  # "km"/"h" -> last threshold reported
        "thr": {},  # rule -> [t of alerts in the last hour]
        "seg": None,  # open segment
        "tent": None,  # tentative trip while parked
        "last_moving_t": None,
        "first_still": None,  # {"t","lat","lon"} first still fix after moving
    }


class Evaluator:
    def __init__(
        self,
        vehicle_id: int,
        fleet_id: int | None,
        rules: RuleSet,
        fences: GeofenceIndex,
        state: dict[str, Any] | None = None,
        routes: list[RoutePlan] | None = None,
        groups: frozenset[int] = frozenset(),
    ) -> None:
        self.vehicle_id = vehicle_id
        self.fleet_id = fleet_id
        self.groups = groups
        self.rules = rules
        self.fences = fences
        self.routes = routes or []
        self.st = state if state is not None else new_state()
        self.events: list[EventOut] = []
        self.segments: list[SegmentOut] = []
        self._now_t = 0

    # -- plumbing ------------------------------------------------------------

    def _emit(
        self,
        rule: str,
        f: FixIn,
        decided: FixIn,
        rule_key: str = "",
        geofence_id: int | None = None,
        severity: str | None = None,
        **details: Any,
    ) -> None:
        if not self.rules.enabled.get(rule, False):
            return
        # Throttle: at most N alerts per rule per vehicle per hour of fix time.
        recent = [t for t in self.st["thr"].get(rule, []) if t > f.t - 3_600_000]
        throttled = len(recent) >= self.rules.throttle_per_hour
        if not throttled:
            recent.append(f.t)
        self.st["thr"][rule] = recent
        self.events.append(
            EventOut(
                type=rule,
                rule_key=rule_key,
                fix_key=f.key,
                t=f.t,
                decided_t=decided.t,
                severity=severity or self.rules.severity[rule],
                lat=f.lat,
                lon=f.lon,
                throttled=throttled,
                geofence_id=geofence_id,
                details=details,
            )
        )

    @staticmethod
    def _ref(f: FixIn) -> dict[str, Any]:
        return {"t": f.t, "key": f.key, "lat": f.lat, "lon": f.lon, "spd": f.speed}

    @staticmethod
    def _fix(ref: dict[str, Any]) -> FixIn:
        return FixIn(ref["key"], ref["t"], ref["lat"], ref["lon"], ref.get("spd"))

    # -- one fix -------------------------------------------------------------

    def feed(self, f: FixIn) -> None:
        self._now_t = f.t
        st = self.st
        last = st["last"]
        dt_s = (f.t - last["t"]) / 1000.0 if last else None
        speed = f.speed
        if speed is None and last is not None and dt_s and dt_s > 0:
            speed = haversine_m(last["lat"], last["lon"], f.lat, f.lon) / dt_s * 3.6
        spd = speed or 0.0

        self._odometer(f, last, dt_s, spd)
        inside_limits = self._geofences(f)
        self._overspeed(f, spd, dt_s, inside_limits)
        self._harsh(f, last, dt_s, spd)
        self._ignition(f, dt_s)
        self._idling(f, spd)
        self._motion(f, spd)
        self._engine(f, dt_s)
        self._segments(f, last, dt_s, spd)
        if spd >= 5.0:  # recent moving speed, for ETAs
            st["spd_ema"] = spd if st.get("spd_ema") is None else 0.9 * st["spd_ema"] + 0.1 * spd
        if self.routes or st.get("visits") or st.get("dev"):
            track(st, self.routes, self._ref(f), self._visit_emit(f))
        st["last"] = {"t": f.t, "lat": f.lat, "lon": f.lon, "spd": spd, "key": f.key}

    def _visit_emit(self, f: FixIn) -> Callable[..., None]:
        def emit(rule: str, first: dict[str, Any], rule_key: str, **details: Any) -> None:
            self._emit(rule, self._fix(first), f, rule_key=rule_key, **details)

        return emit

    def _odometer(
        self, f: FixIn, last: dict[str, Any] | None, dt_s: float | None, spd: float
    ) -> None:
        if last is None or not dt_s or dt_s <= 0:
            return
        d = haversine_m(last["lat"], last["lon"], f.lat, f.lon)
        if d / dt_s * 3.6 > MAX_PLAUSIBLE_KMH:
            return
        # A parked receiver wanders: count distance only when moving.
        moving = max(spd, last.get("spd") or 0.0) >= 3.0 if f.speed is not None else d >= 20.0
        if moving:
            self.st["odo_m"] += d
            seg = self.st["seg"]
            if seg is not None and seg["kind"] == "trip":
                seg["dist"] += d
            if self.st["tent"] is not None:
                self.st["tent"]["dist"] += d

    def _geofences(self, f: FixIn) -> list[float]:
        """Update geofence states; return speed limits of geofences the fix is in."""
        geo: dict[str, Any] = self.st["geo"]
        limits: list[float] = []
        for k in list(geo):  # deleted, or no longer for this vehicle: forget it silently
            fence = self.fences.by_id.get(int(k))
            if fence is None or not fence.applies_to(self.vehicle_id, self.fleet_id, self.groups):
                del geo[k]
        tracked = [int(k) for k in geo]
        for gid, (fence, d) in sorted(self.fences.distances(f.lat, f.lon, tracked).items()):
            if not fence.applies_to(self.vehicle_id, self.fleet_id, self.groups):
                continue
            spec = fence.spec
            if d <= 0 and spec.speed_limit_kmh:
                limits.append(float(spec.speed_limit_kmh))
            gs = geo.get(str(gid))
            if gs is None:
                if d > spec.hysteresis_m:
                    continue  # well outside, never inside: nothing to track
                gs = geo[str(gid)] = {"in": False, "cand": None, "since": None, "dwell": False}
            h = spec.hysteresis_m
            # A transition needs the fix beyond the hysteresis band on the other
            # side, and to stay there for min_dwell_s.
            crossing = d <= -h if not gs["in"] else d >= h
            if crossing:
                if gs["cand"] is None:
                    gs["cand"] = self._ref(f)
                if f.t - gs["cand"]["t"] >= spec.min_dwell_s * 1000:
                    first = self._fix(gs["cand"])
                    gs["in"] = not gs["in"]
                    gs["cand"] = None
                    gs["since"] = first.t
                    gs["dwell"] = False
                    active = fence.hours is None or fence.hours.active(first.t)
                    if active:
                        rule = "geofence_enter" if gs["in"] else "geofence_exit"
                        self._emit(
                            rule,
                            first,
                            f,
                            rule_key=str(gid),
                            geofence_id=gid,
                            severity=spec.severity,
                            geofence=spec.name,
                        )
            else:
                gs["cand"] = None  # came back: a flap on the boundary, no transition
            if gs["in"] and spec.dwell_alert_s and not gs["dwell"] and gs["since"] is not None:
                if f.t - gs["since"] >= spec.dwell_alert_s * 1000:
                    gs["dwell"] = True
                    if fence.hours is None or fence.hours.active(f.t):
                        self._emit(
                            "geofence_dwell",
                            f,
                            f,
                            rule_key=str(gid),
                            geofence_id=gid,
                            geofence=spec.name,
                            inside_s=(f.t - gs["since"]) / 1000.0,
                        )
            if not gs["in"] and gs["cand"] is None and d > h:
                del geo[str(gid)]  # outside and settled: stop tracking
        return limits

    def _overspeed(
        self, f: FixIn, spd: float, dt_s: float | None, fence_limits: list[float]
    ) -> None:
        own = self.rules.p("overspeed", "limit_kmh")
        limits = [*fence_limits, *([float(own)] if own else [])]
        over = self.st["over"]
        if not limits:
            self.st["over"] = None
            return
        limit = min(limits) + float(self.rules.p("overspeed", "tolerance_kmh") or 0.0)
        if spd > limit:
            if over is None:
                over = self.st["over"] = {
                    **self._ref(f),
                    "max": spd,
                    "limit": limit,
                    "fired": False,
                }
            over["max"] = max(over["max"], spd)
            over["limit"] = min(over["limit"], limit)
            if dt_s and dt_s < MAX_INTEGRATE_GAP_S:
                self._trip_stat("overspeed_s", dt_s)
            dur = (f.t - over["t"]) / 1000.0
            if not over["fired"] and dur >= float(self.rules.p("overspeed", "min_duration_s")):
                over["fired"] = True
                self._emit(
                    "overspeed",
                    self._fix(over),
                    f,
                    limit_kmh=over["limit"],
                    speed_kmh=round(over["max"], 1),
                )
        else:
            self.st["over"] = None

    def _harsh(self, f: FixIn, last: dict[str, Any] | None, dt_s: float | None, spd: float) -> None:
        if f.imu is not None:
            self._harsh_imu(f, f.imu)
            return
        if last is None or not dt_s or dt_s <= 0 or f.speed is None:
            return
        a = (spd - (last.get("spd") or 0.0)) / 3.6 / dt_s
        if a < 0 and dt_s <= self.rules.p("harsh_braking", "max_gap_s"):
            if -a >= self.rules.p("harsh_braking", "threshold_ms2"):
                self._trip_stat("harsh_count", 1)
                self._emit("harsh_braking", f, f, accel_ms2=round(a, 2), source="speed")
        elif a > 0 and dt_s <= self.rules.p("harsh_acceleration", "max_gap_s"):
            if a >= self.rules.p("harsh_acceleration", "threshold_ms2"):
                self._trip_stat("harsh_count", 1)
                self._emit("harsh_acceleration", f, f, accel_ms2=round(a, 2), source="speed")

    def _harsh_imu(self, f: FixIn, imu: dict[str, Any]) -> None:
        """A fix from a device with an accelerometer is judged on its peaks only:
        speed deltas would count the same manoeuvre a second time, smoothed."""
        checks = (
            ("harsh_braking", -(imu.get("ax_min") or 0.0), imu.get("ax_min")),
            ("harsh_acceleration", imu.get("ax_max") or 0.0, imu.get("ax_max")),
            ("harsh_cornering", imu.get("ay_max") or 0.0, imu.get("ay_max")),
        )
        for rule, magnitude, peak in checks:
            if peak is not None and magnitude >= self.rules.p(rule, "imu_threshold_ms2"):
                self._trip_stat("harsh_count", 1)
                self._emit(rule, f, f, accel_ms2=round(peak, 2), source="accelerometer")

    def _ignition(self, f: FixIn, dt_s: float | None) -> None:
        ign = f.ign
        if ign is None:
            return
        prev = self.st["ign"]
        if prev is not None and ign != prev:
            self._emit("ignition_on" if ign else "ignition_off", f, f)
        if ign and prev and dt_s and dt_s < MAX_INTEGRATE_GAP_S:
            self.st["engine_s"] += dt_s
        self.st["ign"] = ign

    def _idling(self, f: FixIn, spd: float) -> None:
        idle = self.st["idle"]
        if f.ign and spd <= self.rules.p("idling", "max_speed_kmh"):
            if idle is None:
                idle = self.st["idle"] = {**self._ref(f), "fired": False}
            dur = (f.t - idle["t"]) / 1000.0
            if not idle["fired"] and dur >= self.rules.p("idling", "min_duration_s"):
                idle["fired"] = True
                self._emit("idling", self._fix(idle), f, min_duration_s=dur)
        else:
            if idle is not None:
                self._trip_stat("idle_s", (f.t - idle["t"]) / 1000.0)
            self.st["idle"] = None

    def _motion(self, f: FixIn, spd: float) -> None:
        m = self.st["motion"]
        if not m["moving"]:
            going = spd >= self.rules.p("motion_start", "speed_kmh")
            need = self.rules.p("motion_start", "min_duration_s")
        else:
            going = spd < self.rules.p("motion_stop", "speed_kmh")
            need = self.rules.p("motion_stop", "min_duration_s")
        if not going:
            m["cand"] = None
            return
        if m["cand"] is None:
            m["cand"] = self._ref(f)
        if (f.t - m["cand"]["t"]) / 1000.0 >= need:
            first = self._fix(m["cand"])
            m["moving"] = not m["moving"]
            m["cand"] = None
            self._emit("motion_start" if m["moving"] else "motion_stop", first, f)

    def _engine(self, f: FixIn, dt_s: float | None = None) -> None:
        eng = f.eng or {}
        st = self.st
        if eng.get("odo") is not None:
            st["obd_odo_km"] = float(eng["odo"])
        seg = st["seg"]
        if seg is None or seg["kind"] != "trip":
            seg = st["tent"]  # a move not yet proven a trip collects the same inputs
        if seg is not None:
            # Fuel estimate inputs: mass air flow integrated, fuel level first/last.
            maf = eng.get("maf")
            if maf is not None and dt_s and dt_s < MAX_INTEGRATE_GAP_S:
                seg["maf_g"] = seg.get("maf_g", 0.0) + float(maf) * dt_s
            if eng.get("fuel") is not None:
                seg.setdefault("fuel0", float(eng["fuel"]))
                seg["fuel1"] = float(eng["fuel"])
        vbat = eng.get("vbat")
        if vbat is not None:
            b = st["batt"]
            if not b["low"] and vbat < self.rules.p("low_battery", "below_v"):
                if b["cand"] is None:
                    b["cand"] = self._ref(f)
                if (f.t - b["cand"]["t"]) / 1000.0 >= self.rules.p("low_battery", "min_duration_s"):
                    b["low"] = True
                    self._emit("low_battery", self._fix(b["cand"]), f, vbat=vbat)
                    b["cand"] = None
            elif not b["low"]:
                b["cand"] = None
            elif vbat >= self.rules.p("low_battery", "rearm_v"):
                b["low"] = False
        ect = eng.get("ect")
        if ect is not None:
            if not st["temp_high"] and ect >= self.rules.p("engine_temp_high", "above_c"):
                st["temp_high"] = True
                self._emit("engine_temp_high", f, f, coolant_c=ect)
            elif st["temp_high"] and ect < self.rules.p("engine_temp_high", "rearm_c"):
                st["temp_high"] = False
        dtc = eng.get("dtc")
        if dtc is not None:
            known = set(st["dtc"])
            for code in sorted(set(dtc) - known):
                self._emit("dtc_new", f, f, rule_key=code, code=code)
            st["dtc"] = sorted(set(dtc))
        fuel = eng.get("fuel")
        if fuel is not None:
            self._fuel(f, float(fuel))
        self._maintenance(f, eng)

    def _fuel(self, f: FixIn, pct: float) -> None:
        window = self.rules.p("fuel_drop", "window_s") * 1000
        hist = [h for h in self.st["fuel"] if h[0] >= f.t - window]
        spd = f.speed or 0.0
        if hist:
            hi = max(h[1] for h in hist)
            lo = min(h[1] for h in hist)
            if hi - pct >= self.rules.p("fuel_drop", "drop_pct") and spd <= self.rules.p(
                "fuel_drop", "max_speed_kmh"
            ):
                self._emit("fuel_drop", f, f, from_pct=hi, to_pct=pct)
                hist = []
            elif pct - lo >= self.rules.p("refuel", "rise_pct"):
                self._emit("refuel", f, f, from_pct=lo, to_pct=pct)
                hist = []
        hist.append([f.t, pct])
        self.st["fuel"] = hist

    def _maintenance(self, f: FixIn, eng: dict[str, Any]) -> None:
        every_km = self.rules.p("maintenance_due", "every_km")
        if every_km:
            km = float(eng["odo"]) if eng.get("odo") is not None else self.st["odo_m"] / 1000.0
            due = math.floor(km / every_km) * every_km
            prev = self.st["maint"].get("km")
            if prev is None:
                self.st["maint"]["km"] = due  # what was due before we knew the vehicle
            elif due > prev:
                self.st["maint"]["km"] = due
                self._emit("maintenance_due", f, f, rule_key=f"km:{due:g}", odometer_km=km)
        every_h = self.rules.p("maintenance_due", "every_engine_h")
        if every_h:
            h = self.st["engine_s"] / 3600.0
            due = math.floor(h / every_h) * every_h
            prev = self.st["maint"].get("h")
            if prev is None:
                self.st["maint"]["h"] = due
            elif due > prev:
                self.st["maint"]["h"] = due
                self._emit("maintenance_due", f, f, rule_key=f"h:{due:g}", engine_h=h)

    # -- trips and stops -------------------------------------------------------

    def _trip_stat(self, name: str, v: float) -> None:
        """Add to the open trip, or to the tentative one (kept if it proves a trip)."""
        seg = self.st["seg"]
        if seg is not None and seg["kind"] == "trip":
            seg[name] = seg.get(name, 0) + v
        elif self.st["tent"] is not None:
            self.st["tent"][name] = self.st["tent"].get(name, 0) + v

    def _open(self, kind: str, ref: dict[str, Any], reason: str) -> None:
        self.st["seg"] = {
            "kind": kind,
            "t": ref["t"],
            "lat": ref["lat"],
            "lon": ref["lon"],
            "reason": reason,
            "dist": 0.0,
            "max": 0.0,
            "odo0": self.st["odo_m"],
        }

    def _close(self, end: dict[str, Any], reason: str) -> None:
        seg = self.st["seg"]
        if seg is None:
            return
        self.segments.append(self._segment_out(seg, end, reason))
        self.st["seg"] = None

    def _segment_out(
        self, seg: dict[str, Any], end: dict[str, Any] | None, reason: str | None
    ) -> SegmentOut:
        stats: dict[str, Any] = {}
        if seg["kind"] == "trip":
            dur = ((end["t"] if end else self.st["last"]["t"]) - seg["t"]) / 1000.0
            over_min = seg.get("overspeed_s", 0.0) / 60.0
            harsh = seg.get("harsh_count", 0)
            idle_min = seg.get("idle_s", 0.0) / 60.0
            # Score: 100 minus penalties per overspeed minute, harsh event and
            # idle minute, scaled by trip length so long trips are not punished
            # for being long.
            hours = max(dur / 3600.0, 0.25)
            penalty = (5.0 * over_min + 10.0 * harsh + 1.0 * idle_min) / hours
            stats = {
                "distance_m": seg["dist"],
                "max_speed": seg["max"],
                "odo_start_km": seg["odo0"] / 1000.0,
                "odo_end_km": self.st["odo_m"] / 1000.0,
                "idle_s": seg.get("idle_s", 0.0),
                "overspeed_s": seg.get("overspeed_s", 0.0),
                "harsh_count": harsh,
                "score": round(max(0.0, 100.0 - penalty), 1),
                **self._fuel_estimate(seg),
            }
        return SegmentOut(
            kind=seg["kind"],
            start_t=seg["t"],
            lat=seg["lat"],
            lon=seg["lon"],
            start_reason=seg["reason"],
            end_t=end["t"] if end else None,
            end_lat=end["lat"] if end else None,
            end_lon=end["lon"] if end else None,
            end_reason=reason,
            decided_t=self._now_t if end else int(self.st["last"]["t"]),
            stats=stats,
        )

    def _fuel_estimate(self, seg: dict[str, Any]) -> dict[str, Any]:
        """Litres used: from MAF when reported (stoichiometric petrol), else from the
        fuel level drop and the configured tank size; None when neither exists."""
        if seg.get("maf_g"):
            return {"fuel_l": seg["maf_g"] / AFR_PETROL / PETROL_G_PER_L, "fuel_source": "maf"}
        tank = self.rules.trips.get("tank_l")
        f0, f1 = seg.get("fuel0"), seg.get("fuel1")
        if tank and f0 is not None and f1 is not None and f0 >= f1:
            return {"fuel_l": (f0 - f1) / 100.0 * float(tank), "fuel_source": "level"}
        return {"fuel_l": None, "fuel_source": None}

    def open_segment(self) -> SegmentOut | None:
        seg = self.st["seg"]
        return self._segment_out(seg, None, None) if seg is not None else None

    def _segments(
        self, f: FixIn, last: dict[str, Any] | None, dt_s: float | None, spd: float
    ) -> None:
        p = self.rules.trips
        st = self.st
        ref = self._ref(f)
        use_ign = bool(p["use_ignition"])
        moving = spd >= p["speed_kmh"] and (not use_ign or f.ign is not False)

        if last is not None and dt_s is not None and dt_s >= p["min_no_data_duration_s"]:
            seg = st["seg"]
            far = haversine_m(last["lat"], last["lon"], f.lat, f.lon) > p["min_trip_distance_m"]
            if seg is not None and (seg["kind"] == "trip" or far):
                self._close(last, "no_data")
                st["tent"] = None
                st["first_still"] = None
                self._open("trip" if moving else "stop", ref, "data_resumed")
                if moving:
                    st["last_moving_t"] = f.t
                return

        seg = st["seg"]
        if seg is None:  # the first fix of this vehicle
            self._open("trip" if moving else "stop", ref, "first_fix")
            st["last_moving_t"] = f.t if moving else None
            return

        if seg["kind"] == "trip":
            seg["max"] = max(seg["max"], spd)
            if use_ign and f.ign is False:
                self._close(ref, "ignition_off")
                self._open("stop", ref, "ignition_off")
                st["first_still"] = None
                return
            if moving:
                st["last_moving_t"] = f.t
                st["first_still"] = None
                return
            if st["first_still"] is None:
                st["first_still"] = ref
            lm = st["last_moving_t"] or seg["t"]
            if (f.t - lm) / 1000.0 >= p["min_parking_duration_s"]:
                still = st["first_still"]
                self._close(still, "parked")
                self._open("stop", still, "parked")
                st["first_still"] = None
            return

        # Parked: motion starts a tentative trip that must prove itself.
        tent = st["tent"]
        if moving:
            if tent is None:
                tent = st["tent"] = {**ref, "dist": 0.0, "max": 0.0, "last_moving": f.t}
            tent["last_moving"] = f.t
            tent["max"] = max(tent["max"], spd)
            long_enough = (f.t - tent["t"]) / 1000.0 >= p["min_trip_duration_s"]
            if long_enough and tent["dist"] >= p["min_trip_distance_m"]:
                reason = "ignition_on" if use_ign else "motion"
                self._close(tent, reason)
                self._open("trip", tent, reason)
                st["seg"]["dist"] = tent["dist"]
                st["seg"]["max"] = tent["max"]
                st["seg"]["odo0"] = st["odo_m"] - tent["dist"]
                for k in ("overspeed_s", "harsh_count", "idle_s", "maf_g", "fuel0", "fuel1"):
                    if k in tent:
                        st["seg"][k] = tent[k]
                st["last_moving_t"] = f.t
                st["tent"] = None
        elif (
            tent is not None and (f.t - tent["last_moving"]) / 1000.0 >= p["min_parking_duration_s"]
        ):
            st["tent"] = None  # too short a move: still the same stop
