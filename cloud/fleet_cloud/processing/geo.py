"""Metres, not degrees: distances and a local plane for geometry.

Geofences are small next to the Earth, so each one gets its own local
equirectangular plane about its centre: x = east metres, y = north metres.
The map is affine in (lon, lat), so "inside a polygon" is the same question
in degrees and in the plane, while distances and buffers (circle radius,
corridor width, hysteresis) are in true metres to well under 0.1 % over tens
of kilometres. Distances between fixes use haversine on the mean sphere
(within 0.5 % of the ellipsoid, far below GNSS noise for odometry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class LocalPlane:
    """East/north metres about (lat0, lon0)."""

    lat0: float
    lon0: float

    @property
    def m_per_deg_lon(self) -> float:
        return M_PER_DEG_LAT * math.cos(math.radians(self.lat0))

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self.lon0) * self.m_per_deg_lon, (lat - self.lat0) * M_PER_DEG_LAT

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        return self.lat0 + y / M_PER_DEG_LAT, self.lon0 + x / self.m_per_deg_lon

    def deg_margin(self, metres: float) -> tuple[float, float]:
        """(dlon, dlat) that cover at least `metres` around this plane's origin."""
        # cos shrinks towards the poles: use a generous lower bound so the
        # index never misses a candidate.
        cos = max(math.cos(math.radians(min(89.0, abs(self.lat0) + 1.0))), 1e-3)
        return metres / (M_PER_DEG_LAT * cos), metres / M_PER_DEG_LAT
