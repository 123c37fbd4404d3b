"""The dashboard in a real headless Chromium against the real cloud stack.

A vehicle is registered and reports a fix; the test signs in (after one wrong
password), waits for the vehicle's marker, publishes a fix ~500 m further east
and waits until the same marker, without a reload, sits at the new position.
Screenshots go to tests/artifacts/dashboard-*.png.

Uses Debian's Chromium (/usr/bin/chromium); Playwright never downloads a browser.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import pytest
from playwright import sync_api

from tests.browser.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    attr,
    marker_selector,
    off_loop,
    text,
)

EPS = 1e-5  # degrees (~1 m): the cloud may round coordinates on the way

pytestmark = pytest.mark.browser


def test_live_marker_follows_published_fixes(cloud: Any) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not at /usr/bin/chromium: run deploy/bootstrap.sh")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    suffix = uuid.uuid4().hex[:8]
    device_id = f"dash-{suffix}"
    name = f"Dashboard Van {suffix}"
    vehicle_id = cloud.register_vehicle(name, device_id)

    now_ms = int(time.time() * 1000)
    first = {"seq": 1, "t": now_ms, "lat": 52.52, "lon": 13.40, "spd": 35.0, "hdg": 90.0}
    # ~500 m east: one degree of longitude is 111.32 km * cos(latitude).
    dlon = 0.5 / (111.32 * math.cos(math.radians(first["lat"])))
    second = {**first, "seq": 2, "lon": round(first["lon"] + dlon, 6)}
    cloud.publish_fixes(device_id, [first])

    console_errors: list[str] = []
    expecting_login_401 = False

    def on_console(msg: Any) -> None:
        if msg.type != "error":
            return
        # Chromium logs every 4xx response, including the wrong-password attempt
        # this test makes on purpose; nothing else may show up.
        if expecting_login_401 and "401" in msg.text:
            return
        console_errors.append(f"console: {msg.text}")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(20_000)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: console_errors.append(f"pageerror: {exc}"))
        try:
            page.goto(cloud.base_url + "/")
            page.wait_for_selector("#login-email")

            # A wrong password shows a clear message and stays on the login form.
            expecting_login_401 = True
            page.fill("#login-email", cloud.email)
            page.fill("#login-password", cloud.password + "-wrong")
            page.click("#login-submit")
            page.wait_for_selector("#login-error", state="visible")
            assert "wrong email or password" in text(page, "#login-error").lower()
            page.screenshot(path=str(ARTIFACTS / "dashboard-login-error.png"))
            expecting_login_401 = False

            page.fill("#login-password", cloud.password)
            page.click("#login-submit")

            marker = page.locator(marker_selector(vehicle_id))
            marker.wait_for(state="attached")
            page.wait_for_function(
                "() => document.querySelector('#ws-state').textContent.trim() === 'connected'"
            )
            row = page.locator(f'.vehicle-row[data-vehicle-id="{vehicle_id}"]')
            assert name in row.inner_text()

            lat0 = float(attr(marker, "data-lat"))
            lon0 = float(attr(marker, "data-lon"))
            assert abs(lat0 - first["lat"]) < EPS and abs(lon0 - first["lon"]) < EPS, (lat0, lon0)
            assert "status-moving" in (marker.get_attribute("class") or "")
            page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"))

            second["t"] = max(int(time.time() * 1000), first["t"] + 1000)
            off_loop(cloud.publish_fixes, device_id, [second])
            page.wait_for_function(
                """([sel, lat, lon, eps]) => {
                    const el = document.querySelector(sel);
                    return !!el && Math.abs(parseFloat(el.dataset.lat) - lat) < eps
                                && Math.abs(parseFloat(el.dataset.lon) - lon) < eps;
                }""",
                arg=[marker_selector(vehicle_id), second["lat"], second["lon"], EPS],
            )
            # Still the same element: the marker moved, the page did not reload.
            assert page.locator(marker_selector(vehicle_id)).count() == 1
            page.screenshot(path=str(ARTIFACTS / "dashboard-moved.png"))

            # The row opens the details panel for that vehicle.
            row.click()
            page.wait_for_selector("#vehicle-panel", state="visible")
            assert text(page, "#panel-title") == name
            assert "35 km/h" in text(page, "#panel-speed")
            page.screenshot(path=str(ARTIFACTS / "dashboard-panel.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"))
            raise
        finally:
            browser.close()

    assert console_errors == [], console_errors
