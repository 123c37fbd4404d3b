"""A fleet manager's session in a real headless Chromium against the real cloud
stack (ingest, processing, API, WebSocket): sign in, watch a vehicle move, open
it (engine values, outbox backlog), play back its history with the slider and
the play button, read its trips report and export it, draw a geofence, drive
the vehicle into it with published fixes, see the enter alert arrive live,
acknowledge it, sign out (the token is revoked). Also the tablet layouts, and
the token refresh and session-expiry handling with a short token lifetime.

Screenshots go to tests/artifacts/workflow-*.png and tablet-*.png.
"""

from __future__ import annotations

import itertools
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright import sync_api

from fleet_wire import up_topic
from fleet_wire.topics import Up
from tests.browser.browser import (
    ARTIFACTS,
    ConsoleWatch,
    attr,
    chromium,
    marker_selector,
    off_loop,
    sign_in,
    text,
)
from tests.harness import (
    Broker,
    CloudStack,
    db_fetch,
    http_json,
    mqtt_publish,
    wait_until,
)

pytestmark = pytest.mark.browser

EPS = 1e-5  # degrees (~1 m)
M_PER_DEG_LAT = 111_320.0
ENGINE = {"ign": True, "rpm": 1850.0, "ect": 88.0, "fuel": 64.0, "vbat": 13.9}


ONE_ROW_SHOWN = "() => document.querySelectorAll('.vehicle-row:not([hidden])').length === 1"
PLAYBACK_LOADED = "() => document.querySelector('#pb-note').textContent.includes('positions')"


def east(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat, lon + metres / (M_PER_DEG_LAT * math.cos(math.radians(lat)))


def history(start_ms: int, n: int, lat: float, lon: float) -> list[dict[str, Any]]:
    """n fixes 15 s apart driving east, speed swinging between 20 and 60 km/h."""
    fixes = []
    for i in range(n):
        spd = 40.0 + 20.0 * math.sin(i / 4)
        fixes.append(
            {"seq": i + 1, "t": start_ms + i * 15_000, "lat": round(lat, 7), "lon": round(lon, 7),
             "spd": round(spd, 1), "hdg": 90.0, "eng": ENGINE}
        )  # fmt: skip
        lat, lon = east(lat, lon, spd / 3.6 * 15)
    return fixes


def interpolate(fixes: list[dict[str, Any]], t: float) -> tuple[float, float]:
    for a, b in itertools.pairwise(fixes):
        if a["t"] <= t <= b["t"]:
            f = (t - a["t"]) / (b["t"] - a["t"])
            return a["lat"] + (b["lat"] - a["lat"]) * f, a["lon"] + (b["lon"] - a["lon"]) * f
    raise AssertionError(f"time {t} outside the track")


def publish_status(broker: Broker, device_id: str, status: dict[str, Any]) -> None:
    mqtt_publish(broker, up_topic(device_id, Up.STATUS), orjson.dumps(status))


def click_map_at(page: sync_api.Page, lat: float, lon: float) -> None:
    """Click the map where (lat, lon) is, as a user would after finding the place."""
    x, y = page.evaluate(
        "([lat, lon]) => { const p = fleetDashboard.map.latLngToContainerPoint([lat, lon]);"
        " return [p.x, p.y]; }",
        [lat, lon],
    )
    box = page.locator("#map").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + x, box["y"] + y)


def shot(page: sync_api.Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@contextmanager
def open_page(width: int = 1280, height: int = 800) -> Iterator[tuple[sync_api.Page, ConsoleWatch]]:
    """A fresh browser page; a failure leaves tests/artifacts/workflow-failure.png.

    Open it after the set-up: inside it, the cloud helpers that run asyncio need off_loop.
    """
    with chromium() as browser:
        size: sync_api.ViewportSize = {"width": width, "height": height}
        ctx = browser.new_context(viewport=size, accept_downloads=True)
        p = ctx.new_page()
        p.set_default_timeout(30_000)
        watch = ConsoleWatch(p)
        try:
            yield p, watch
        except BaseException:
            shot(p, "workflow-failure")
            raise
        finally:
            ctx.close()


def test_fleet_manager_workflow(cloud: CloudStack, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    device_id = f"flow-{suffix}"
    name = f"Route Van {suffix}"
    vehicle_id = cloud.register_vehicle(name, device_id)

    # 12 minutes of history ending now, and the agent's status with a backlog.
    now = int(time.time() * 1000)
    track = history(now - 48 * 15_000, 48, 52.50, 13.30)
    cloud.publish_fixes(device_id, track)
    publish_status(
        cloud.broker,
        device_id,
        {"v": 1, "online": True, "agent": "0.9.1-test",
         "outbox": {"depth": 12, "oldest_ms": now - 90_000, "dropped": 0, "bytes": 2048}},
    )  # fmt: skip
    status_sql = "SELECT 1 FROM device_status WHERE device_id = $1"
    wait_until(lambda: bool(db_fetch(cloud.dsn, status_sql, device_id)), 10, "the device status")
    with open_page() as (p, watch):
        manager_session(cloud, p, watch, device_id, name, vehicle_id, track, tmp_path)


def manager_session(
    cloud: CloudStack,
    p: sync_api.Page,
    watch: ConsoleWatch,
    device_id: str,
    name: str,
    vehicle_id: int,
    track: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    suffix = device_id.removeprefix("flow-")
    # -- sign in and see the vehicle move -------------------------------------------------
    sign_in(p, cloud.base_url, cloud.email, cloud.password)
    marker = p.locator(marker_selector(vehicle_id))
    marker.wait_for(state="attached")
    last = track[-1]
    moved_lat, moved_lon = east(last["lat"], last["lon"], 150)
    moved = {**last, "seq": 49, "t": int(time.time() * 1000), "lat": moved_lat,
             "lon": round(moved_lon, 7)}  # fmt: skip
    track.append(moved)
    off_loop(cloud.publish_fixes, device_id, [moved])
    p.wait_for_function(
        """([sel, lon, eps]) => {
            const el = document.querySelector(sel);
            return !!el && Math.abs(parseFloat(el.dataset.lon) - lon) < eps;
        }""",
        arg=[marker_selector(vehicle_id), moved["lon"], EPS],
    )
    assert marker.get_attribute("data-status") == "moving"

    # -- open the vehicle: live values, engine, backlog ------------------------------------
    p.click(f'.vehicle-row[data-vehicle-id="{vehicle_id}"] button')
    p.wait_for_selector("#vehicle-panel", state="visible")
    assert text(p, "#panel-title") == name
    assert text(p, "#panel-ignition") == "On"
    assert "1850" in text(p, "#panel-engine")
    p.wait_for_function(
        "() => document.querySelector('#panel-backlog').textContent.includes('12 fixes waiting')"
    )
    assert "0.9.1-test" in text(p, "#panel-agent")
    shot(p, "workflow-panel")

    # -- history playback: slider, play, speed chart ---------------------------------------
    p.click("#panel-history")
    p.wait_for_function(PLAYBACK_LOADED)
    assert text(p, "#pb-note").startswith(f"{len(track)} positions")
    slider = p.locator("#pb-slider")
    box = slider.bounding_box()
    assert box is not None
    p.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    t_slider = float(slider.input_value())
    assert track[0]["t"] < t_slider < track[-1]["t"]
    pb = p.locator(".playback-marker")
    p.wait_for_function(
        "(t) => document.querySelector('.playback-marker')?.dataset.t === String(t)",
        arg=round(t_slider),
    )
    want_lat, want_lon = interpolate(track, t_slider)
    assert abs(float(attr(pb, "data-lat")) - want_lat) < EPS
    assert abs(float(attr(pb, "data-lon")) - want_lon) < EPS
    drawn = p.evaluate(
        """() => { const c = document.querySelector('#pb-chart');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert drawn > 500, "the speed chart drew nothing"
    shot(p, "workflow-playback")
    p.select_option("#pb-speed", "60")
    p.click("#pb-play")
    p.wait_for_function(
        "(t) => Number(document.querySelector('.playback-marker').dataset.t) > t + 5000",
        arg=t_slider,
    )
    p.click("#pb-play")  # pause
    assert p.get_attribute("#pb-play", "aria-label") == "Play"
    p.click("#pb-close")
    p.wait_for_selector("#playback", state="hidden")

    # -- trips and stops report, CSV export ---------------------------------------------------
    p.click("#panel-report")
    p.wait_for_selector("#rp-trips tbody tr td >> text=Play", timeout=40_000)
    with p.expect_download() as dl:
        p.click("#rp-trips-csv")
    csv_path = tmp_path / "trips.csv"
    dl.value.save_as(csv_path)
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("vehicle,start_utc,end_utc,duration_s,distance_km")
    assert len(lines) >= 2 and lines[1].startswith(name)
    shot(p, "workflow-report")
    p.click("#rp-close")

    # -- draw a geofence ahead of the vehicle --------------------------------------------------
    c_lat, c_lon = east(moved["lat"], moved["lon"], 400)
    edge_lat, edge_lon = east(c_lat, c_lon, 120)
    p.evaluate("([lat, lon]) => fleetDashboard.map.setView([lat, lon], 16, {animate: false})",
               [c_lat, c_lon])  # fmt: skip
    p.click("#tab-geofences")
    p.click("#draw-circle")
    p.wait_for_selector("#draw-hint", state="visible")
    click_map_at(p, c_lat, c_lon)
    click_map_at(p, edge_lat, edge_lon)
    p.wait_for_selector("#geofence-form", state="visible")
    fence_name = f"Depot {suffix}"
    p.fill("#geofence-name", fence_name)
    assert p.input_value("#geofence-severity") == "warning"
    p.click("#geofence-save")
    p.wait_for_selector(f'.geofence-row >> text="{fence_name}"')
    token = cloud.token()
    fences = http_json(cloud.base_url + "/api/v1/geofences", token=token)
    assert isinstance(fences, dict)
    (fence,) = [f for f in fences["features"] if f["properties"]["name"] == fence_name]
    assert fence["geometry"]["type"] == "Point" and fence["properties"]["kind"] == "circle"
    f_lon, f_lat = fence["geometry"]["coordinates"]
    assert abs(f_lat - c_lat) < 1e-4 and abs(f_lon - c_lon) < 1e-4  # within a few pixels
    assert 100 <= fence["properties"]["radius_m"] <= 140
    shot(p, "workflow-geofence")
    draw_polygons(p, watch, c_lat, c_lon, suffix)

    # -- drive in: the enter alert arrives live and is acknowledged ---------------------------
    p.click("#tab-alerts")
    t0 = int(time.time() * 1000)
    outside = east(f_lat, f_lon, -250)
    drive = [
        {"seq": 50, "t": t0, "lat": outside[0], "lon": outside[1], "spd": 30.0, "hdg": 90.0},
        *({"seq": 51 + i, "t": t0 + 6_000 * (i + 1), "lat": f_lat, "lon": f_lon, "spd": 0.0,
           "hdg": 90.0} for i in range(4)),
    ]  # fmt: skip
    off_loop(cloud.publish_fixes, device_id, drive)
    row = p.locator(f'.alert-row[data-type="geofence_enter"]:has-text("{fence_name}")')
    row.wait_for(timeout=40_000)
    assert name in row.inner_text()
    assert not p.locator("#alert-badge").is_hidden()
    shot(p, "workflow-alert")
    row.locator(".ack-button").click()
    p.wait_for_selector('.alert-row.acked[data-type="geofence_enter"]')
    events = http_json(
        cloud.base_url + f"/api/v1/events?vehicle_id={vehicle_id}&type=geofence_enter", token=token
    )
    assert isinstance(events, list) and len(events) == 1
    assert events[0]["acknowledged_at"] is not None and events[0]["geofence_id"] == fence["id"]
    shot(p, "workflow-acknowledged")

    # The newest fixes carried no engine values: the panel shows the stored ones, dated.
    p.click("#tab-vehicles")
    p.click(f'.vehicle-row[data-vehicle-id="{vehicle_id}"] button')
    p.wait_for_function("() => document.querySelector('#panel-engine').innerText.includes('1850')")
    assert "newest fix had none" in text(p, "#panel-engine")
    assert text(p, "#panel-ignition").startswith("On (read ")

    # -- sign out: the token stops working ---------------------------------------------------------
    page_token = p.evaluate("() => sessionStorage.getItem('fleet.access')")
    p.click("#logout")
    p.wait_for_selector("#login-view", state="visible")
    assert "signed out" in text(p, "#login-notice").lower()
    with pytest.raises(urllib.error.HTTPError) as err:
        http_json(cloud.base_url + "/api/v1/vehicles", token=page_token)
    assert err.value.code == 401
    assert watch.errors == [], watch.errors


def north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / M_PER_DEG_LAT, lon


def draw_polygons(
    p: sync_api.Page, watch: ConsoleWatch, lat: float, lon: float, suffix: str
) -> None:
    """A bow-tie is refused with the API's reason shown in the form; a triangle closed
    by clicking its first corner is saved."""
    nw = east(*north(lat, lon, 250), -100)
    ne = east(*north(lat, lon, 250), 100)
    sw = east(*north(lat, lon, 150), -100)
    se = east(*north(lat, lon, 150), 100)
    p.click("#draw-polygon")
    for corner in (nw, se, ne, sw):  # edges nw-se and ne-sw cross
        click_map_at(p, *corner)
    p.click("#draw-finish")
    p.fill("#geofence-name", f"Bow tie {suffix}")
    watch.allow = ("422",)  # Chromium logs the refused request
    p.click("#geofence-save")
    p.wait_for_selector("#geofence-error", state="visible")
    assert "invalid" in text(p, "#geofence-error").lower()
    shot(p, "workflow-geofence-error")
    watch.allow = ()
    p.click("#geofence-cancel")
    p.wait_for_selector("#geofence-form", state="hidden")

    p.click("#draw-polygon")
    for corner in (nw, ne, sw, nw):  # back on the first corner closes it
        click_map_at(p, *corner)
    p.wait_for_selector("#geofence-form", state="visible")
    assert "3 corners" in text(p, "#geofence-shape")
    p.fill("#geofence-name", f"Yard {suffix}")
    p.click("#geofence-save")
    p.wait_for_selector(f'.geofence-row >> text="Yard {suffix}"')
    assert p.locator("#geofence-error").is_hidden()


@pytest.mark.parametrize(("width", "height"), [(1024, 768), (768, 1024)])
def test_tablet_layouts(cloud: CloudStack, width: int, height: int) -> None:
    """Landscape keeps the sidebar; portrait folds it into a drawer. Nothing overflows."""
    suffix = uuid.uuid4().hex[:8]
    device_id = f"tab-{suffix}"
    vehicle_id = cloud.register_vehicle(f"Tablet Van {suffix}", device_id)
    # Each run's van on its own spot: two vans in one place would be one cluster marker.
    lat = 52.53 + width / 100_000
    cloud.publish_fixes(device_id, history(int(time.time() * 1000) - 10 * 15_000, 10, lat, 13.41))
    with open_page(width, height) as (p, watch):
        tablet_session(cloud, p, watch, vehicle_id, width, height)


def tablet_session(
    cloud: CloudStack, p: sync_api.Page, watch: ConsoleWatch, vehicle_id: int, w: int, h: int
) -> None:
    width, height = w, h
    sign_in(p, cloud.base_url, cloud.email, cloud.password)
    p.locator(marker_selector(vehicle_id)).wait_for(state="attached")
    portrait = width < 800
    assert p.locator("#sidebar").is_visible() != portrait
    if portrait:
        p.click("#sidebar-toggle")
        p.wait_for_function(  # slid fully in
            "() => getComputedStyle(document.querySelector('#sidebar')).transform === 'none'"
        )
    shot(p, f"tablet-{width}x{height}-list")
    p.click(f'.vehicle-row[data-vehicle-id="{vehicle_id}"] button')
    p.wait_for_selector("#vehicle-panel", state="visible")
    if portrait:
        p.wait_for_selector("#sidebar", state="hidden")  # slid out: the map gets the screen back
    shot(p, f"tablet-{width}x{height}-panel")
    p.click("#panel-history")
    p.wait_for_function(PLAYBACK_LOADED)
    shot(p, f"tablet-{width}x{height}-playback")
    # Every control of the playback bar is on screen.
    for sel in ("#pb-play", "#pb-slider", "#pb-speed", "#pb-close", "#pb-chart", "#pb-load"):
        b = p.locator(sel).bounding_box()
        assert b is not None and b["x"] >= 0 and b["x"] + b["width"] <= width + 1, sel
        assert b["y"] + b["height"] <= height + 1, sel
    doc_w = p.evaluate("() => document.documentElement.scrollWidth")
    assert doc_w <= width, f"page wider than the screen: {doc_w}"
    assert watch.errors == [], watch.errors


@pytest.fixture
def short_token_cloud(
    broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudStack]:
    """A second API process whose access tokens live 35 s (refreshed 30 s before expiry)."""
    stack = CloudStack(
        broker,
        database,
        tmp_path_factory.mktemp("cloud-short"),
        email=f"short-{uuid.uuid4().hex[:6]}@test.local",
        extra_env={"FLEET_JWT_TTL_S": "35", "FLEET_PROCESSING_ENABLED": "false"},
        serve_args=["--no-ingest"],  # not a second member of the ingest shared subscription
    ).start()
    yield stack
    stack.stop()


def test_token_refresh_and_session_expiry(short_token_cloud: CloudStack) -> None:
    cloud = short_token_cloud
    with chromium() as browser:
        p = browser.new_page(viewport={"width": 1280, "height": 800})
        p.set_default_timeout(30_000)
        watch = ConsoleWatch(p)
        with p.expect_websocket() as first_ws:
            sign_in(p, cloud.base_url, cloud.email, cloud.password)
        first = p.evaluate("() => sessionStorage.getItem('fleet.access')")
        # The page trades its refresh token before the access token expires...
        p.wait_for_function("(t) => sessionStorage.getItem('fleet.access') !== t", arg=first)
        second = p.evaluate("() => sessionStorage.getItem('fleet.access')")
        vehicles = http_json(cloud.base_url + "/api/v1/vehicles", token=second)
        assert isinstance(vehicles, list)
        # The server ends the WebSocket when the first token expires (1008); the page
        # comes back at once on a new one with its current token, and says connected.
        p.wait_for_function(
            "(t) => sessionStorage.getItem('fleet.access') !== t", arg=second, timeout=20_000
        )
        assert f"token={first}" in first_ws.value.url
        next_ws = p.wait_for_event("websocket", timeout=60_000)
        assert f"token={first}" not in next_ws.url
        p.wait_for_function(
            "() => document.querySelector('#ws-state').textContent.trim() === 'connected'"
        )
        second = p.evaluate("() => sessionStorage.getItem('fleet.access')")
        # ...and when the session is revoked elsewhere, the next refresh fails and the
        # page asks to sign in again instead of failing silently.
        watch.allow = ("401",)
        req = urllib.request.Request(
            cloud.base_url + "/api/v1/auth/logout",
            data=b"{}",
            method="POST",
            headers={"authorization": f"Bearer {second}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204
        p.wait_for_selector("#login-view", state="visible")
        assert "expired" in text(p, "#login-notice").lower()
        p.screenshot(path=str(ARTIFACTS / "workflow-session-expired.png"))
        assert watch.errors == [], watch.errors


def test_clusters_status_filter_and_search(cloud: CloudStack) -> None:
    """Vehicles close together on screen are one cluster showing the count; clicking it
    zooms in until they separate. Status chips and the search narrow list and map."""
    suffix = uuid.uuid4().hex[:8]
    now = int(time.time() * 1000)
    base_lat, base_lon = 48.20, 16.37  # away from the other tests' vehicles
    ids: dict[str, int] = {}
    for i, (kind, spd, ign) in enumerate(
        [("moving", 30.0, True)] * 4 + [("idle", 0.0, True), ("stopped", 0.0, False)]
    ):
        device_id = f"cl{i}-{suffix}"
        ids[f"{kind}{i}"] = cloud.register_vehicle(f"Cluster {kind} {i} {suffix}", device_id)
        lat, lon = east(base_lat, base_lon, 40.0 * i)  # 6 vehicles within 200 m
        fix = {"seq": 1, "t": now, "lat": lat, "lon": round(lon, 7), "spd": spd, "hdg": 45.0,
               "eng": {"ign": ign, "rpm": 800.0 if ign else 0.0}}  # fmt: skip
        cloud.publish_fixes(device_id, [fix])
    with open_page() as (p, watch):
        sign_in(p, cloud.base_url, cloud.email, cloud.password)
        p.evaluate(
            "([lat, lon]) => fleetDashboard.map.setView([lat, lon], 12, {animate: false})",
            [base_lat, base_lon],
        )
        cluster = p.locator('.vehicle-cluster[data-count="6"]')
        cluster.wait_for()
        assert "4 moving, 1 idle, 1 stopped" in (cluster.get_attribute("title") or "")
        assert p.locator(marker_selector(ids["idle4"])).count() == 0  # inside the cluster
        shot(p, "workflow-cluster")
        cluster.click()
        for vid in ids.values():
            p.locator(marker_selector(vid)).wait_for(state="attached")
        assert p.locator(marker_selector(ids["idle4"])).get_attribute("data-status") == "idle"
        assert p.locator(marker_selector(ids["stopped5"])).get_attribute("data-status") == "stopped"

        p.click('#status-filter .chip[data-status="idle"]')
        visible = p.locator(".vehicle-row:visible")
        p.wait_for_function(
            "() => document.querySelectorAll('.vehicle-row:not([hidden])').length === 1"
        )
        assert f"Cluster idle 4 {suffix}" in visible.inner_text()
        p.locator(marker_selector(ids["moving0"])).wait_for(state="detached")  # map follows
        p.click('#status-filter .chip[data-status="idle"]')  # filter off again
        p.fill("#vehicle-search", f"stopped 5 {suffix}")
        p.wait_for_function(
            "() => document.querySelectorAll('.vehicle-row:not([hidden])').length === 1"
        )
        assert f"Cluster stopped 5 {suffix}" in p.locator(".vehicle-row:visible").inner_text()
        assert watch.errors == [], watch.errors


def test_roles_shape_the_screens(cloud: CloudStack) -> None:
    """A viewer sees geofences but no drawing tools; an installer sees vehicles and
    their devices only, and the page never asks the API for what the role may not read
    (a 403 would show up as a console error)."""
    suffix = uuid.uuid4().hex[:8]
    vehicle_id = cloud.register_vehicle(f"Role Van {suffix}", f"role-{suffix}")
    cloud.publish_fixes(f"role-{suffix}", history(int(time.time() * 1000) - 30_000, 3, 47.0, 8.0))
    viewer = cloud.add_user("viewer")
    installer = cloud.add_user("installer")
    with open_page() as (p, watch):
        sign_in(p, cloud.base_url, *viewer)
        p.click("#tab-geofences")
        p.wait_for_selector("#geofence-readonly", state="visible")
        assert p.locator("#geofence-tools").is_hidden()
        p.click("#logout")
        p.wait_for_selector("#login-view", state="visible")

        sign_in(p, cloud.base_url, *installer)
        assert p.locator("#tab-alerts").is_hidden() and p.locator("#tab-geofences").is_hidden()
        p.click(f'.vehicle-row[data-vehicle-id="{vehicle_id}"] button')
        p.wait_for_function(
            "() => document.querySelector('#panel-backlog').textContent.includes('status')"
        )
        assert p.locator("#panel-report").is_hidden()
        assert p.locator("#panel-history").is_visible()
        shot(p, "workflow-installer")
        assert watch.errors == [], watch.errors
