"""Distances and angles on the Earth's surface, good to well under a metre at tracking scales."""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def heading_delta_deg(a: float, b: float) -> float:
    """Smallest angle between two courses: 350 -> 10 is 20 degrees, not 340."""
    d = abs(a - b) % 360.0
    return 360.0 - d if d > 180.0 else d
