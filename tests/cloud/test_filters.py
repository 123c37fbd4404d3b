"""Plausibility filters: each reason code, stored and marked, never silently dropped."""

from __future__ import annotations

import subprocess
import time

import pytest

from fleet_cloud.ingest.filters import (
    DUPLICATE,
    FUTURE,
    INVALID_FIX,
    SPEED_JUMP,
    TOO_OLD,
    ZERO_POSITION,
    FilterLimits,
    PlausibilityFilter,
)
from fleet_wire import Fix
from tests.harness import CloudStack, db_fetch, http_json, tool

NOW = int(time.time() * 1000)


def fix(seq: int, t: int, lat: float = 52.5, lon: float = 13.4, **kw: object) -> Fix:
    return Fix.model_validate({"seq": seq, "t": t, "lat": lat, "lon": lon, **kw})


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (fix(2, NOW, hdop=25.0), INVALID_FIX),
        (fix(2, NOW, sat=2), INVALID_FIX),
        (fix(2, NOW, lat=0.0, lon=0.0), ZERO_POSITION),
        (fix(2, NOW + 301_000), FUTURE),
        (fix(2, NOW - 91 * 86_400_000), TOO_OLD),
        (fix(2, NOW - 10_000), DUPLICATE),  # same time as the previous fix, other seq
        (fix(2, NOW, lat=52.6), SPEED_JUMP),  # 11 km in 10 s
        (fix(2, NOW, lat=52.5005), None),  # 55 m in 10 s: fine
        (fix(2, NOW - 60_000, lat=48.0), None),  # late (older) fix: not judged by a newer one
    ],
)
def test_each_reason(candidate: Fix, reason: str | None) -> None:
    f = PlausibilityFilter(FilterLimits())
    assert f.check("dev", fix(1, NOW - 10_000), NOW) is None
    assert f.check("dev", candidate, NOW) == reason


def test_a_retransmission_is_not_a_duplicate() -> None:
    f = PlausibilityFilter(FilterLimits())
    first = fix(1, NOW)
    assert f.check("dev", first, NOW) is None
    assert f.check("dev", first, NOW) is None


def test_overrides_change_the_limits() -> None:
    f = PlausibilityFilter(FilterLimits())
    jet = FilterLimits().merged({"max_speed_kmh": 5000, "bogus": 1})
    assert f.check("plane", fix(1, NOW - 10_000), NOW) is None
    assert f.check("plane", fix(2, NOW, lat=52.6), NOW, jet) is None


def test_filtered_fixes_are_stored_marked_and_kept_off_the_map(cloud: CloudStack) -> None:
    vid = cloud.register_vehicle("Filter van", "filter-van")
    t = NOW - 60_000
    good = {"seq": 1, "t": t, "lat": 52.5, "lon": 13.4}
    jump = {"seq": 2, "t": t + 1000, "lat": 53.5, "lon": 13.4}  # 111 km in 1 s
    zero = {"seq": 3, "t": t + 2000, "lat": 0.0, "lon": 0.0}
    cloud.publish_fixes("filter-van", [good, jump, zero])
    rows = db_fetch(
        cloud.dsn,
        "SELECT seq, filter_reason FROM positions WHERE device_id = 'filter-van' ORDER BY seq",
    )
    assert [(r["seq"], r["filter_reason"]) for r in rows] == [
        (1, None), (2, SPEED_JUMP), (3, ZERO_POSITION),
    ]  # fmt: skip
    token = cloud.token()
    (mine,) = [
        v for v in http_json(f"{cloud.base_url}/api/v1/vehicles", token=token)  # type: ignore[union-attr]
        if v["id"] == vid
    ]  # fmt: skip
    assert mine["state"]["t"] == t  # the live map stays on the plausible fix
    url = f"{cloud.base_url}/api/v1/vehicles/{vid}/positions"
    plain = http_json(url, token=token)
    assert [p["t"] for p in plain["positions"]] == [t]  # type: ignore[index]
    every = http_json(url + "?include_filtered=true", token=token)
    assert [p["filtered"] for p in every["positions"]] == [None, SPEED_JUMP, ZERO_POSITION]  # type: ignore[index]


def test_device_override_from_the_cli(cloud: CloudStack) -> None:
    cloud.register_vehicle("Override van", "override-van")
    out = subprocess.run(
        [tool("fleet-cloud"), "device-filters", "override-van", "--set", "min_sats=0",
         "--dsn", cloud.dsn],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "'min_sats': 0.0" in out.stdout
    bad = subprocess.run(
        [tool("fleet-cloud"), "device-filters", "override-van", "--set", "speed=1",
         "--dsn", cloud.dsn],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 1 and "LIMIT=VALUE" in bad.stderr
    cloud.publish_fixes(
        "override-van", [{"seq": 1, "t": NOW - 5000, "lat": 52.5, "lon": 13.4, "sat": 1}]
    )
    (row,) = db_fetch(
        cloud.dsn, "SELECT filter_reason FROM positions WHERE device_id = 'override-van'"
    )
    assert row["filter_reason"] is None
