"""Geofences: GeoJSON validation, geometry in local metres, an STRtree index.

Three kinds: ``circle`` (GeoJSON Point + radius_m), ``polygon`` (GeoJSON
Polygon, holes allowed) and ``corridor`` (GeoJSON LineString + width_m). Each
is compiled into its own local plane (see ``geo``) so that every decision is a
signed distance in metres: negative inside, positive outside. Hysteresis and
minimum dwell (in ``evaluator``) work on that number.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from fleet_cloud.processing.geo import LocalPlane, haversine_m

MAX_VERTICES = 10_000
MAX_EXTENT_M = 500_000.0  # local plane stays accurate; larger areas are not geofences
MAX_RADIUS_M = 100_000.0
MAX_WIDTH_M = 10_000.0
MAX_LAT = 85.0  # the local plane degenerates at the poles
KINDS = ("circle", "polygon", "corridor")
_GEOJSON_TYPE = {"circle": "Point", "polygon": "Polygon", "corridor": "LineString"}


class GeofenceError(ValueError):
    """A geofence that cannot be used; ``field`` names the culprit."""

    def __init__(self, message: str, field: str = "geometry") -> None:
        super().__init__(message)
        self.field = field


def _position(p: object, where: str) -> tuple[float, float]:
    if not isinstance(p, list | tuple) or len(p) < 2:
        raise GeofenceError(f"{where}: a position is [lon, lat], got {str(p)[:40]}")
    lon, lat = p[0], p[1]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lon, lat)):
        raise GeofenceError(f"{where}: coordinates must be numbers")
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeofenceError(f"{where}: coordinates must be finite")
    if not -180.0 <= lon <= 180.0:
        raise GeofenceError(f"{where}: longitude {lon} is outside -180..180")
    if not -MAX_LAT <= lat <= MAX_LAT:
        raise GeofenceError(f"{where}: latitude {lat} is outside -{MAX_LAT}..{MAX_LAT}")
    return lon, lat


def _positions(raw: object, where: str) -> list[tuple[float, float]]:
    if not isinstance(raw, list):
        raise GeofenceError(f"{where}: expected a list of positions")
    return [_position(p, f"{where}[{i}]") for i, p in enumerate(raw)]


def _check_antimeridian(pts: Sequence[tuple[float, float]], where: str) -> None:
    lons = [p[0] for p in pts]
    if any(abs(b - a) > 180.0 for a, b in itertools.pairwise(lons)) or (
        lons and max(lons) - min(lons) > 180.0
    ):
        raise GeofenceError(
            f"{where} crosses the antimeridian (longitude jumps by more than 180°): "
            "split it into two geofences, one on each side of ±180°"
        )


@dataclass(frozen=True, slots=True)
class GeofenceSpec:
    """What is stored: the validated definition."""

    id: int
    tenant_id: int
    name: str
    kind: str
    geometry: dict[str, Any]
    radius_m: float | None = None
    width_m: float | None = None
    speed_limit_kmh: float | None = None
    hysteresis_m: float = 15.0
    min_dwell_s: float = 10.0
    dwell_alert_s: float | None = None
    fleet_id: int | None = None
    vehicle_id: int | None = None
    active_hours: dict[str, Any] | None = None
    severity: str = "info"
    group_id: int | None = None


def validate(
    kind: str,
    geometry: object,
    radius_m: float | None = None,
    width_m: float | None = None,
    active_hours: object = None,
) -> None:
    """Raise GeofenceError naming the problem; return None when usable."""
    compile_geometry(kind, geometry, radius_m, width_m)
    if active_hours is not None:
        parse_active_hours(active_hours)


def compile_geometry(
    kind: str, geometry: object, radius_m: float | None, width_m: float | None
) -> tuple[LocalPlane, BaseGeometry, BaseGeometry]:
    """(plane, area in plane metres, core in plane metres) of a geofence.

    ``core`` is what the signed distance is measured from: the polygon itself,
    the circle's centre, the corridor's centre line.
    """
    if kind not in KINDS:
        raise GeofenceError(f"kind must be one of {', '.join(KINDS)}", "kind")
    if not isinstance(geometry, dict):
        raise GeofenceError("geometry must be a GeoJSON geometry object")
    want = _GEOJSON_TYPE[kind]
    if geometry.get("type") != want:
        raise GeofenceError(
            f"a {kind} geofence needs a GeoJSON {want}, got {str(geometry.get('type'))[:30]!r}"
        )
    coords = geometry.get("coordinates")
    if coords is None or coords == []:
        raise GeofenceError("geometry is empty (no coordinates)")

    if kind == "circle":
        lon, lat = _position(coords, "geometry.coordinates")
        if radius_m is None or not (1.0 <= radius_m <= MAX_RADIUS_M):
            raise GeofenceError(f"radius_m must be between 1 and {MAX_RADIUS_M:.0f}", "radius_m")
        plane = LocalPlane(lat, lon)
        if abs(lat) + math.degrees(radius_m / 6_371_008.8) > MAX_LAT:
            raise GeofenceError("circle reaches too close to a pole")
        core = Point(0.0, 0.0)
        return plane, core.buffer(radius_m, quad_segs=32), core

    if kind == "corridor":
        pts = _positions(coords, "geometry.coordinates")
        if len(pts) < 2:
            raise GeofenceError("a corridor needs at least 2 positions")
        if len(pts) > MAX_VERTICES:
            raise GeofenceError(f"too many vertices: {len(pts)} > {MAX_VERTICES}")
        _check_antimeridian(pts, "corridor")
        if width_m is None or not (1.0 <= width_m <= MAX_WIDTH_M):
            raise GeofenceError(f"width_m must be between 1 and {MAX_WIDTH_M:.0f}", "width_m")
        plane = _plane_for(pts)
        line = LineString([plane.to_xy(la, lo) for lo, la in pts])
        if line.length < 1.0:
            raise GeofenceError("corridor has no length (all positions coincide)")
        _check_extent(line)
        return plane, line.buffer(width_m / 2.0), line

    # polygon
    if not isinstance(coords, list) or not coords:
        raise GeofenceError("polygon has no rings")
    rings = [_positions(r, f"geometry.coordinates[{i}]") for i, r in enumerate(coords)]
    total = sum(len(r) for r in rings)
    if total > MAX_VERTICES:
        raise GeofenceError(f"too many vertices: {total} > {MAX_VERTICES}")
    for i, r in enumerate(rings):
        name = "outer ring" if i == 0 else f"hole {i}"
        if len(r) < 4:
            raise GeofenceError(f"{name} needs at least 4 positions (closed), got {len(r)}")
        if r[0] != r[-1]:
            raise GeofenceError(f"{name} is not closed: first and last positions differ")
        _check_antimeridian(r, f"{name}")
    plane = _plane_for(rings[0])
    shell = [plane.to_xy(la, lo) for lo, la in rings[0]]
    holes = [[plane.to_xy(la, lo) for lo, la in r] for r in rings[1:]]
    poly = Polygon(shell, holes)
    if not poly.is_valid:
        reason = shapely.is_valid_reason(poly)
        raise GeofenceError(f"polygon is invalid: {_explain(reason, plane)}")
    if poly.area < 1.0:
        raise GeofenceError("polygon has no area")
    _check_extent(poly)
    return plane, poly, poly


def _plane_for(pts: Sequence[tuple[float, float]]) -> LocalPlane:
    lons = [p[0] for p in pts]
    lats = [p[1] for p in pts]
    return LocalPlane((min(lats) + max(lats)) / 2.0, (min(lons) + max(lons)) / 2.0)


def _check_extent(g: BaseGeometry) -> None:
    x0, y0, x1, y1 = g.bounds
    if max(x1 - x0, y1 - y0) > MAX_EXTENT_M:
        raise GeofenceError(f"geofence is larger than {MAX_EXTENT_M / 1000:.0f} km across")


def _explain(reason: str, plane: LocalPlane) -> str:
    """shapely's reason, with its plane coordinates turned back into lon/lat."""
    if "[" in reason and reason.endswith("]"):
        head, _, xy = reason[:-1].partition("[")
        try:
            x, y = (float(v) for v in xy.split())
            lat, lon = plane.to_latlon(x, y)
            where = f" at lon {lon:.6f}, lat {lat:.6f}"
        except ValueError:
            where = ""
        head = head.strip()
        if head.lower().startswith("self-intersection") or head.lower().startswith("ring self"):
            return f"self-intersection{where}"
        if "hole" in head.lower():
            return f"{head.lower()}{where} (holes must lie inside the outer ring)"
        return f"{head.lower()}{where}"
    return reason.lower()


# -- active hours ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActiveHours:
    days: frozenset[int]  # 0 = Monday
    start_min: int
    end_min: int  # may be < start_min: overnight
    tz: ZoneInfo

    def active(self, t_ms: int) -> bool:
        local = datetime.fromtimestamp(t_ms / 1000, tz=UTC).astimezone(self.tz)
        m = local.hour * 60 + local.minute
        if self.start_min <= self.end_min:
            return local.weekday() in self.days and self.start_min <= m < self.end_min
        # Overnight window belongs to the day it starts on.
        if m >= self.start_min:
            return local.weekday() in self.days
        return m < self.end_min and (local.weekday() - 1) % 7 in self.days


def _hhmm(v: object, name: str) -> int:
    if not isinstance(v, str) or len(v) != 5 or v[2] != ":":
        raise GeofenceError(f"active_hours.{name} must be HH:MM", f"active_hours.{name}")
    try:
        h, m = int(v[:2]), int(v[3:])
    except ValueError:
        raise GeofenceError(f"active_hours.{name} must be HH:MM", f"active_hours.{name}") from None
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise GeofenceError(f"active_hours.{name} is not a time of day", f"active_hours.{name}")
    return h * 60 + m


def parse_active_hours(raw: object) -> ActiveHours:
    if not isinstance(raw, dict):
        raise GeofenceError("active_hours must be an object", "active_hours")
    days = raw.get("days", [0, 1, 2, 3, 4, 5, 6])
    if not isinstance(days, list) or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
        raise GeofenceError("active_hours.days must list 0 (Mon)..6 (Sun)", "active_hours.days")
    try:
        tz = ZoneInfo(str(raw.get("tz", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise GeofenceError("active_hours.tz is not a known time zone", "active_hours.tz") from None
    return ActiveHours(
        frozenset(days),
        _hhmm(raw.get("start", "00:00"), "start"),
        _hhmm(raw.get("end", "24:00"), "end"),
        tz,
    )


# -- compiled geofences and the index ------------------------------------------


@dataclass(eq=False)
class Geofence:
    spec: GeofenceSpec
    plane: LocalPlane
    area: BaseGeometry
    core: BaseGeometry
    hours: ActiveHours | None
    bbox_deg: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))

    @classmethod
    def build(cls, spec: GeofenceSpec) -> Geofence:
        plane, area, core = compile_geometry(spec.kind, spec.geometry, spec.radius_m, spec.width_m)
        shapely.prepare(area)
        hours = parse_active_hours(spec.active_hours) if spec.active_hours else None
        # Degree bbox, widened by the hysteresis band so a vehicle leaving
        # through the band is still a candidate.
        x0, y0, x1, y1 = area.bounds
        pad = spec.hysteresis_m + 1.0
        la0, lo0 = plane.to_latlon(x0 - pad, y0 - pad)
        la1, lo1 = plane.to_latlon(x1 + pad, y1 + pad)
        dlon, dlat = plane.deg_margin(1.0)
        return cls(spec, plane, area, core, hours, (lo0 - dlon, la0 - dlat, lo1 + dlon, la1 + dlat))

    @property
    def id(self) -> int:
        return self.spec.id

    def signed_distance(self, lat: float, lon: float) -> float:
        """Metres from the boundary: negative inside, positive outside."""
        s = self.spec
        if s.kind == "circle":
            c = self.plane
            return haversine_m(lat, lon, c.lat0, c.lon0) - float(s.radius_m or 0.0)
        x, y = self.plane.to_xy(lat, lon)
        p = Point(x, y)
        if s.kind == "corridor":
            return float(self.core.distance(p)) - float(s.width_m or 0.0) / 2.0
        d = float(self.area.boundary.distance(p))
        return -d if self.area.contains(p) else d

    def applies_to(
        self, vehicle_id: int, fleet_id: int | None, groups: frozenset[int] = frozenset()
    ) -> bool:
        """Scope: a vehicle, else a vehicle group, else a fleet, else the whole tenant."""
        s = self.spec
        if s.vehicle_id is not None:
            return s.vehicle_id == vehicle_id
        if s.group_id is not None:
            return s.group_id in groups
        if s.fleet_id is not None:
            return s.fleet_id == fleet_id
        return True


class GeofenceIndex:
    """The geofences of one tenant behind an STRtree (rebuilt when they change)."""

    def __init__(self, fences: Iterable[Geofence]) -> None:
        self.fences = list(fences)
        self.by_id = {f.id: f for f in self.fences}
        self._tree = shapely.STRtree([box(*f.bbox_deg) for f in self.fences])

    def candidates(self, lat: float, lon: float) -> list[Geofence]:
        if not self.fences:
            return []
        idx = self._tree.query(Point(lon, lat))
        return [self.fences[int(i)] for i in idx]

    def distances(
        self, lat: float, lon: float, also: Iterable[int] = ()
    ) -> dict[int, tuple[Geofence, float]]:
        """Signed distance to every candidate geofence and to those in ``also``.

        A geofence outside the index's candidates is far away: +inf.
        """
        out = {f.id: (f, f.signed_distance(lat, lon)) for f in self.candidates(lat, lon)}
        for gid in also:
            if gid not in out and gid in self.by_id:
                out[gid] = (self.by_id[gid], math.inf)
        return out
