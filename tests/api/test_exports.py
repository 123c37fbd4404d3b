"""Position exports (JSON, GeoJSON, GPX, CSV) page through a range without losing or
repeating a fix; daily summaries add up the hourly rollup."""

from __future__ import annotations

import csv
import io
import subprocess
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.api.conftest import ingest
from tests.auth.conftest import AuthCloud
from tests.harness import tool

N = 25
GPX_NS = "{http://www.topografix.com/GPX/1/1}"


@pytest.fixture(scope="module")
def track(auth_cloud: AuthCloud) -> dict[str, Any]:
    device = "exp-" + uuid.uuid4().hex[:8]
    vid = auth_cloud.stack.register_vehicle(f"Export van {device}", device)
    t0 = (int(time.time()) - 7200) * 1000
    fixes: list[dict[str, object]] = [
        {"seq": i + 1, "t": t0 + i * 1000, "lat": 52.5 + i * 1e-4, "lon": 13.4, "spd": 36.0,
         "hdg": 0.0, "alt": 30.0 + i, "sat": 9, "hdop": 0.9}
        for i in range(N)
    ]  # fmt: skip
    ingest(auth_cloud, device, fixes)
    start = datetime.fromtimestamp(t0 / 1000, UTC)
    rng = f"from={_q(start - timedelta(minutes=1))}&to={_q(start + timedelta(minutes=5))}"
    return {"vehicle_id": vid, "fixes": fixes, "range": rng, "device": device}


def _q(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(url: str, token: str) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.read(), {k.lower(): v for k, v in r.headers.items()}


def _next_link(headers: dict[str, str]) -> str | None:
    link = headers.get("link")
    if not link:
        return None
    assert link.endswith('>; rel="next"'), link
    return link[1 : link.index(">")]


def test_json_pages_cover_the_range_once(auth_cloud: AuthCloud, track: dict[str, Any]) -> None:
    t = auth_cloud.token("viewer")
    base = f"/api/v1/vehicles/{track['vehicle_id']}/positions.json?{track['range']}&limit=10"
    seen, cursor, pages = [], None, 0
    while True:
        a = auth_cloud.call("GET", base + (f"&cursor={cursor}" if cursor else ""), token=t)
        assert a.status == 200, a.body
        seen += a.body["positions"]
        pages += 1
        cursor = a.body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [p["lat"] for p in seen] == [f["lat"] for f in track["fixes"]]
    assert seen[0]["alt"] == 30.0 and seen[0]["sat"] == 9 and seen[0]["t"].endswith("Z")


def test_csv_follows_the_link_header(auth_cloud: AuthCloud, track: dict[str, Any]) -> None:
    t = auth_cloud.token("installer")
    url: str | None = (
        f"{auth_cloud.base_url}/api/v1/vehicles/{track['vehicle_id']}/positions.csv"
        f"?{track['range']}&limit=7"
    )
    rows: list[dict[str, str]] = []
    while url:
        body, headers = _get(url, t)
        assert headers["content-type"].startswith("text/csv")
        rows += list(csv.DictReader(io.StringIO(body.decode())))
        url = _next_link(headers)
    assert len(rows) == N
    assert [float(r["lat"]) for r in rows] == [f["lat"] for f in track["fixes"]]
    assert rows[0]["speed_kmh"] == "36.0" and rows[-1]["altitude_m"] == str(30.0 + N - 1)


def test_geojson_and_gpx(auth_cloud: AuthCloud, track: dict[str, Any]) -> None:
    t = auth_cloud.token("dispatcher")
    base = f"{auth_cloud.base_url}/api/v1/vehicles/{track['vehicle_id']}/positions"
    body, headers = _get(f"{base}.geojson?{track['range']}", t)
    assert headers["content-type"] == "application/geo+json"
    doc = orjson.loads(body)
    assert doc["type"] == "FeatureCollection" and doc["next_cursor"] is None
    first = doc["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [13.4, 52.5, 30.0]}
    assert len(doc["features"]) == N
    body, headers = _get(f"{base}.gpx?{track['range']}", t)
    assert headers["content-type"].startswith("application/gpx+xml")
    gpx = ET.fromstring(body)
    assert gpx.tag == f"{GPX_NS}gpx" and gpx.get("version") == "1.1"
    pts = gpx.findall(f"{GPX_NS}trk/{GPX_NS}trkseg/{GPX_NS}trkpt")
    assert len(pts) == N
    assert [child.tag.removeprefix(GPX_NS) for child in pts[0]] == ["ele", "time", "sat", "hdop"]
    t0 = datetime.fromtimestamp(int(track["fixes"][0]["t"]) / 1000, UTC)
    assert pts[0].findtext(f"{GPX_NS}time") == t0.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_exports_refuse_long_ranges_and_foreign_cursors(
    auth_cloud: AuthCloud, track: dict[str, Any]
) -> None:
    t = auth_cloud.token("owner")
    base = f"/api/v1/vehicles/{track['vehicle_id']}/positions.csv"
    long = auth_cloud.call("GET", base + "?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
                           token=t)  # fmt: skip
    assert long.status == 422 and long.error_code() == "range_too_long"
    bad = auth_cloud.call("GET", base + "?cursor=not-a-cursor", token=t)
    assert bad.status == 422 and bad.body["error"]["field"] == "cursor"


def test_daily_summaries_add_up_the_hourly_rollup(
    auth_cloud: AuthCloud, track: dict[str, Any]
) -> None:
    subprocess.run([tool("fleet-cloud"), "rollup", "--dsn", auth_cloud.stack.dsn],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    days = Counter(
        datetime.fromtimestamp(int(f["t"]) / 1000, UTC).date().isoformat() for f in track["fixes"]
    )
    first, last = min(days), max(days)
    t = auth_cloud.token("viewer")
    a = auth_cloud.call(
        "GET",
        f"/api/v1/summaries/daily?from={first}&to={last}&vehicle_id={track['vehicle_id']}",
        token=t,
    )
    assert a.status == 200, a.body
    assert {r["day"]: r["fixes"] for r in a.body} == dict(days)
    total_km = sum(r["distance_km"] for r in a.body)
    assert total_km == pytest.approx((N - 1) * 0.01112, rel=0.01)  # 1e-4 degrees of latitude
    assert all(r["vehicle_id"] == track["vehicle_id"] for r in a.body)
    # the installer reads no reports; an unknown zone and a long range are named
    assert auth_cloud.call("GET", "/api/v1/summaries/daily", token=auth_cloud.token("installer")
                           ).status == 403  # fmt: skip
    bad = auth_cloud.call("GET", "/api/v1/summaries/daily?tz=Mars/Olympus", token=t)
    assert bad.status == 422 and bad.body["error"]["field"] == "tz"
    long = auth_cloud.call("GET", "/api/v1/summaries/daily?from=2026-01-01&to=2026-06-01", token=t)
    assert long.status == 422 and long.error_code() == "range_too_long"
