"""Geofence decisions against an independent computation, and validation errors."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleet_cloud.processing.geofences import (
    Geofence,
    GeofenceError,
    GeofenceIndex,
    GeofenceSpec,
    validate,
)
from fleet_sim.geo import haversine_m, offset


def ray_cast(lon: float, lat: float, ring: list[list[float]]) -> bool:
    """Even-odd rule in plain degrees: an implementation that shares nothing with shapely."""
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > lat) != (y2 > lat):
            x = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if x > lon:
                inside = not inside
    return inside


def star_polygon(lat: float, lon: float, radii: list[float], phase: float) -> list[list[float]]:
    """A simple (never self-intersecting) star-shaped ring: vertices by increasing angle."""
    n = len(radii)
    ring = []
    for i, r in enumerate(radii):
        la, lo = offset(lat, lon, r, (phase + 360.0 * i / n) % 360.0)
        ring.append([lo, la])
    ring.append(ring[0])
    return ring


def seg_dist_m(lat: float, lon: float, a: list[float], b: list[float]) -> float:
    """Metres from a point to a segment, by dense sampling with haversine."""
    best = math.inf
    for k in range(201):
        f = k / 200
        best = min(best, haversine_m(lat, lon, a[1] + f * (b[1] - a[1]), a[0] + f * (b[0] - a[0])))
    return best


lats = st.floats(-60, 70)
lons = st.floats(-170, 170)


@settings(max_examples=150, deadline=None)
@given(
    lat=lats,
    lon=lons,
    radii=st.lists(st.floats(50, 3000), min_size=3, max_size=24),
    phase=st.floats(0, 360),
    hole=st.booleans(),
    probes=st.lists(st.tuples(st.floats(0, 360), st.floats(0, 4000)), min_size=1, max_size=20),
)
def test_polygon_inside_matches_ray_casting(
    lat: float,
    lon: float,
    radii: list[float],
    phase: float,
    hole: bool,
    probes: list[tuple[float, float]],
) -> None:
    ring = star_polygon(lat, lon, radii, phase)
    rings = [ring]
    if hole:
        r_hole = min(radii) * 0.4
        rings.append(star_polygon(lat, lon, [r_hole] * 8, 0.0)[::-1])
    spec = GeofenceSpec(1, 1, "p", "polygon", {"type": "Polygon", "coordinates": rings})
    g = Geofence.build(spec)
    index = GeofenceIndex([g])
    for bearing, dist in probes:
        plat, plon = offset(lat, lon, dist, bearing)
        d = g.signed_distance(plat, plon)
        assume(abs(d) > 0.5)  # on the boundary either answer is right
        want = ray_cast(plon, plat, ring) and not (hole and ray_cast(plon, plat, rings[1]))
        assert (d < 0) == want
        if d <= spec.hysteresis_m:
            assert g in index.candidates(plat, plon), "the index must never miss a geofence"


@settings(max_examples=150, deadline=None)
@given(lat=lats, lon=lons, radius=st.floats(5, 20_000), bearing=st.floats(0, 360),
       frac=st.floats(0, 2))  # fmt: skip
def test_circle_distance_in_metres(
    lat: float, lon: float, radius: float, bearing: float, frac: float
) -> None:
    g = Geofence.build(
        GeofenceSpec(1, 1, "c", "circle", {"type": "Point", "coordinates": [lon, lat]}, radius)
    )
    plat, plon = offset(lat, lon, radius * frac, bearing)
    d = g.signed_distance(plat, plon)
    assert d == pytest.approx(radius * frac - radius, abs=0.01 + 1e-6 * radius)


@settings(max_examples=60, deadline=None)
@given(lat=lats, lon=lons, legs=st.lists(st.tuples(st.floats(0, 360), st.floats(100, 2000)),
       min_size=1, max_size=5), width=st.floats(10, 400),
       probe=st.tuples(st.floats(0, 360), st.floats(0, 3000)))  # fmt: skip
def test_corridor_distance_matches_sampling(
    lat: float,
    lon: float,
    legs: list[tuple[float, float]],
    width: float,
    probe: tuple[float, float],
) -> None:
    pts = [[lon, lat]]
    for bearing, dist in legs:
        la, lo = offset(pts[-1][1], pts[-1][0], dist, bearing)
        pts.append([lo, la])
    g = Geofence.build(
        GeofenceSpec(
            1, 1, "k", "corridor", {"type": "LineString", "coordinates": pts}, width_m=width
        )
    )
    plat, plon = offset(lat, lon, probe[1], probe[0])
    want = min(seg_dist_m(plat, plon, a, b) for a, b in itertools.pairwise(pts))
    d = g.signed_distance(plat, plon)
    # Sampling overestimates by at most half a sample step; the local plane is
    # good to ~0.1 % over these few kilometres.
    assert d + width / 2 == pytest.approx(
        want, abs=0.5 + 0.003 * want + max(a for _, a in legs) / 400
    )


SQUARE = [[13.0, 52.0], [13.01, 52.0], [13.01, 52.01], [13.0, 52.01], [13.0, 52.0]]


@pytest.mark.parametrize(
    ("kind", "geometry", "extra", "needle"),
    [
        ("polygon", {"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.01, 52.01],
          [13.01, 52.0], [13.0, 52.01], [13.0, 52.0]]]}, {}, "self-intersection"),
        ("polygon", {"type": "Polygon", "coordinates": []}, {}, "empty"),
        ("polygon", {"type": "Polygon", "coordinates": [[[179.9, 10.0], [-179.9, 10.0],
          [-179.9, 10.1], [179.9, 10.1], [179.9, 10.0]]]}, {}, "antimeridian"),
        ("polygon", {"type": "Polygon", "coordinates": [[[13.0 + i * 1e-6, 52.0] for i in
          range(10_002)]]}, {}, "too many vertices"),
        ("polygon", {"type": "Polygon", "coordinates": [SQUARE[:-1]]}, {}, "not closed"),
        ("polygon", {"type": "Point", "coordinates": [13.0, 52.0]}, {}, "needs a GeoJSON Polygon"),
        ("polygon", {"type": "Polygon", "coordinates": [SQUARE, [[13.02, 52.02], [13.03, 52.02],
          [13.03, 52.03], [13.02, 52.02]]]}, {}, "hole"),
        ("circle", {"type": "Point", "coordinates": [13.0, 52.0]}, {"radius_m": 0}, "radius_m"),
        ("circle", {"type": "Point", "coordinates": [200.0, 52.0]}, {"radius_m": 50}, "longitude"),
        ("corridor", {"type": "LineString", "coordinates": [[13.0, 52.0]]}, {"width_m": 20},
         "at least 2"),
        ("corridor", {"type": "LineString", "coordinates": [[13.0, 52.0], [13.1, 52.0]]}, {},
         "width_m"),
        ("blob", {"type": "Point", "coordinates": [13.0, 52.0]}, {}, "kind"),
    ],
)  # fmt: skip
def test_invalid_geofences_name_the_problem(
    kind: str, geometry: dict, extra: dict, needle: str
) -> None:
    with pytest.raises(GeofenceError) as e:
        validate(kind, geometry, extra.get("radius_m"), extra.get("width_m"))
    assert needle.lower() in str(e.value).lower() or needle == e.value.field


def test_self_intersection_says_where() -> None:
    bow = [[13.0, 52.0], [13.01, 52.01], [13.01, 52.0], [13.0, 52.01], [13.0, 52.0]]
    with pytest.raises(GeofenceError, match=r"self-intersection at lon 13\.005000, lat 52\.005"):
        validate("polygon", {"type": "Polygon", "coordinates": [bow]})


def test_active_hours() -> None:
    g = Geofence.build(
        GeofenceSpec(
            1,
            1,
            "c",
            "circle",
            {"type": "Point", "coordinates": [13.0, 52.0]},
            100.0,
            active_hours={
                "days": [0, 1, 2, 3, 4],
                "start": "22:00",
                "end": "06:00",
                "tz": "Europe/Berlin",
            },
        )
    )
    assert g.hours is not None
    # 2026-01-05 is a Monday; 23:00 Berlin = 22:00 UTC.
    assert g.hours.active(1_767_650_400_000)
    # Saturday 12:00 UTC.
    assert not g.hours.active(1_767_960_000_000)
    with pytest.raises(GeofenceError, match="tz"):
        validate("circle", {"type": "Point", "coordinates": [13.0, 52.0]}, 10.0, None,
                 {"tz": "Mars/Olympus"})  # fmt: skip


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-200, 200)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["circle", "polygon", "corridor"]),
    gtype=st.sampled_from(["Point", "Polygon", "LineString", "MultiPolygon"]),
    coords=json_values,
    size=st.one_of(st.none(), st.floats(allow_nan=False)),
)
def test_any_input_is_a_clear_error_or_valid(
    kind: str, gtype: str, coords: object, size: float | None
) -> None:
    """Hostile GeoJSON never crashes validation: it is valid or a GeofenceError."""
    try:
        validate(kind, {"type": gtype, "coordinates": coords}, size, size)
    except GeofenceError as e:
        assert str(e) and e.field
