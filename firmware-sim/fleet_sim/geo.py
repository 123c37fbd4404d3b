"""Metres <-> degrees for the simulator.

Routes are laid out and driven in a local east/north plane in metres, then
projected to WGS84. Over the few kilometres a city route spans, an
equirectangular projection about the route's own centre is accurate to well
under a metre, far below GNSS noise; distances *between* fixes are measured
with haversine, which is what a consumer of the data would use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Mean Earth radius (IUGG), the usual choice for haversine.
EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, 0..360 clockwise from north."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def heading_of(dx: float, dy: float) -> float:
    """Compass heading (0 = north, 90 = east) of a move in the local plane."""
    return math.degrees(math.atan2(dx, dy)) % 360.0


def offset(lat: float, lon: float, distance_m: float, bearing: float) -> tuple[float, float]:
    """The point distance_m away from (lat, lon) along a great circle of initial bearing."""
    d = distance_m / EARTH_RADIUS_M
    b = math.radians(bearing)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """Equirectangular east/north plane (metres) about an origin."""

    lat0: float
    lon0: float

    def to_latlon(self, x_m: float, y_m: float) -> tuple[float, float]:
        lat = self.lat0 + math.degrees(y_m / EARTH_RADIUS_M)
        lon = self.lon0 + math.degrees(x_m / (EARTH_RADIUS_M * math.cos(math.radians(self.lat0))))
        return lat, lon

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        y = math.radians(lat - self.lat0) * EARTH_RADIUS_M
        x = math.radians(lon - self.lon0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))
        return x, y
