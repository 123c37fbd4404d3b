"""Through the real `fleet-cloud serve`: fixes over MQTT -> ingest -> processing ->
events in the REST API and an alert frame on the WebSocket; geofence validation
errors; tenant scoping; acknowledgement."""

from __future__ import annotations

import asyncio
import time
import urllib.error
from typing import Any

import orjson
import pytest
import websockets

from fleet_sim.geo import offset
from tests.harness import CloudStack, http_json, wait_until

LAT0, LON0 = 48.137, 11.575


def api(cloud: CloudStack, path: str, body: object | None = None, token: str | None = None) -> Any:
    return http_json(cloud.base_url + "/api/v1" + path, body, token)


def api_error(cloud: CloudStack, path: str, body: object, token: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(urllib.error.HTTPError) as e:
        api(cloud, path, body, token)
    return e.value.code, orjson.loads(e.value.read())["error"]


def circle(name: str, lat: float, lon: float, r: float, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"name": name, "radius_m": r, **props},
    }


def test_geofence_validation_errors_name_the_problem(cloud: CloudStack) -> None:
    token = cloud.token()
    bow = [[11.0, 48.0], [11.01, 48.01], [11.01, 48.0], [11.0, 48.01], [11.0, 48.0]]
    cases = [
        ({"type": "Polygon", "coordinates": [bow]}, {}, "self-intersection"),
        ({"type": "Polygon", "coordinates": []}, {}, "empty"),
        ({"type": "Polygon", "coordinates": [[[179.99, 1.0], [-179.99, 1.0], [-179.99, 1.1],
          [179.99, 1.0]]]}, {}, "antimeridian"),
        ({"type": "LineString", "coordinates": [[11.0, 48.0], [11.1, 48.0]]}, {}, "width_m"),
        ({"type": "MultiPoint", "coordinates": [[11.0, 48.0]]}, {}, "Polygon"),
    ]  # fmt: skip
    for geometry, props, needle in cases:
        body = {"type": "Feature", "geometry": geometry, "properties": {"name": "x", **props}}
        status, err = api_error(cloud, "/geofences", body, token)
        assert status == 422 and err["code"] in ("invalid_geofence", "invalid_request"), err
        assert needle.lower() in err["message"].lower(), err
    status, err = api_error(
        cloud, "/geofences", circle("c", 48.0, 11.0, 50, fleet_id=999999), token
    )
    assert status == 422 and err["field"] == "fleet_id"


def _ws_url(cloud: CloudStack, token: str) -> str:
    return cloud.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={token}"


async def test_geofence_events_reach_api_and_websocket(cloud: CloudStack) -> None:
    vid = await asyncio.to_thread(cloud.register_vehicle, "Geo van", "geo-van-1")
    token = await asyncio.to_thread(cloud.token)
    # A circle 600 m east of the start; the van drives east at 36 km/h through it.
    clat, clon = offset(LAT0, LON0, 600, 90)
    g = await asyncio.to_thread(
        api, cloud, "/geofences", circle("Customer", clat, clon, 100, severity="warning"), token
    )
    assert g["id"] and g["properties"]["kind"] == "circle"
    fc = await asyncio.to_thread(api, cloud, "/geofences", None, token)
    assert fc["type"] == "FeatureCollection" and g["id"] in [f["id"] for f in fc["features"]]

    t0 = int(time.time() * 1000) - 300_000  # recent: notifications are sent
    fixes = []
    for i in range(130):
        lat, lon = offset(LAT0, LON0, 10.0 * i, 90)
        fixes.append({"seq": i + 1, "t": t0 + i * 1000, "lat": lat, "lon": lon, "spd": 36.0})
    # An installer may not read alerts (GET /alerts is 403): positions only on its socket.
    installer = await asyncio.to_thread(cloud.token, *cloud.add_user("installer"))
    async with (
        websockets.connect(_ws_url(cloud, token), origin=cloud.base_url) as ws,  # type: ignore[arg-type]
        websockets.connect(_ws_url(cloud, installer), origin=cloud.base_url) as ws_inst,  # type: ignore[arg-type]
    ):
        for w in (ws, ws_inst):
            await w.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        await asyncio.to_thread(cloud.publish_fixes, "geo-van-1", fixes)
        alerts: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while len(alerts) < 2:
                frame = orjson.loads(await ws.recv())
                if frame["type"] != "alert" or frame["event"]["vehicle_id"] != vid:
                    continue
                if frame["event"]["type"].startswith("geofence_"):
                    alerts.append(frame["event"])
        # A marker fix sent after the owner got the alerts: everything pushed to
        # the installer before it (alerts included, had it been sent any) is
        # read by the time the marker's positions frame arrives.
        lat, lon = offset(LAT0, LON0, 1400, 90)
        marker = {"seq": 131, "t": fixes[-1]["t"] + 1000, "lat": lat, "lon": lon, "spd": 36.0}
        await asyncio.to_thread(cloud.publish_fixes, "geo-van-1", [marker])
        inst_types: set[str] = set()
        async with asyncio.timeout(60):
            while True:
                frame = orjson.loads(await ws_inst.recv())
                inst_types.add(frame["type"])
                ts = [v["t"] for v in frame.get("vehicles", []) if v["vehicle_id"] == vid]
                if ts and max(ts) == marker["t"]:
                    break
        assert inst_types <= {"positions", "snapshot"}, inst_types
    assert [a["type"] for a in alerts] == ["geofence_enter", "geofence_exit"]
    assert alerts[0]["geofence_id"] == g["id"] and alerts[0]["severity"] == "warning"
    assert "tenant_id" not in alerts[0]

    evs = await asyncio.to_thread(api, cloud, f"/events?vehicle_id={vid}", None, token)
    kinds = sorted(e["type"] for e in evs)
    assert kinds.count("geofence_enter") == 1 and kinds.count("geofence_exit") == 1
    enter = next(e for e in evs if e["type"] == "geofence_enter")
    # Entered ~500 m along (the edge at 100 m from the centre), hysteresis 15 m:
    # first fix at or past 515 m, i.e. fix 52 at the earliest.
    assert enter["t"] in range(t0 + 51_000, t0 + 54_000)
    assert not enter["late"] and enter["notify_status"] == "sent"

    acked = await asyncio.to_thread(api, cloud, f"/events/{enter['id']}/acknowledge", {}, token)
    assert acked["acknowledged_at"] and acked["acknowledged_by"]
    again = await asyncio.to_thread(api, cloud, f"/events/{enter['id']}/acknowledge", {}, token)
    assert again["acknowledged_at"] == acked["acknowledged_at"]
    unacked = await asyncio.to_thread(
        api, cloud, f"/events?vehicle_id={vid}&unacknowledged=true", None, token
    )
    assert enter["id"] not in [e["id"] for e in unacked]

    # The same fixes again (a device resending after lost acks): nothing fires twice.
    await asyncio.to_thread(cloud.publish_fixes, "geo-van-1", fixes[:60])
    await asyncio.sleep(2)
    evs2 = await asyncio.to_thread(api, cloud, f"/events?vehicle_id={vid}", None, token)
    assert sorted(e["id"] for e in evs2) == sorted(e["id"] for e in evs)
    trips = await asyncio.to_thread(api, cloud, f"/vehicles/{vid}/trips", None, token)
    assert isinstance(trips, list)


def test_other_tenants_cannot_see_or_ack(cloud: CloudStack) -> None:
    import subprocess

    from tests.harness import tool

    token = cloud.token()
    mine = api(cloud, "/geofences", circle("Mine", 48.2, 11.6, 80), token)
    subprocess.run(
        [tool("fleet-cloud"), "add-user", "other@test.local", "--password", "other-pass-123",
         "--tenant", "other-tenant", "--role", "manager", "--dsn", cloud.dsn],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    other = api(cloud, "/auth/login", {"email": "other@test.local", "password": "other-pass-123"})
    otoken = other["access_token"]
    assert mine["id"] not in [f["id"] for f in api(cloud, "/geofences", None, otoken)["features"]]
    with pytest.raises(urllib.error.HTTPError) as e:
        api(cloud, f"/geofences/{mine['id']}", None, otoken)
    assert e.value.code == 404
    evs = api(cloud, "/events", None, token)
    if evs:
        with pytest.raises(urllib.error.HTTPError) as e:
            api(cloud, f"/events/{evs[0]['id']}/acknowledge", {}, otoken)
        assert e.value.code == 404
    assert api(cloud, "/events", None, otoken) == []


def test_rules_validation(cloud: CloudStack) -> None:
    token = cloud.token()
    r = _put(cloud, "/rules/overspeed", {"params": {"limit_kmh": 90, "min_duration_s": 5}}, token)
    assert r["params"]["limit_kmh"] == 90
    rules = api(cloud, "/rules", None, token)
    (over,) = [x for x in rules if x["type"] == "overspeed" and x["vehicle_id"] is None]
    assert over["params"]["limit_kmh"] == 90 and over["params"]["tolerance_kmh"] == 0.0
    assert {x["type"] for x in rules} >= {"overspeed", "geofence_enter", "trips", "throttle"}


def _put(cloud: CloudStack, path: str, body: object, token: str) -> Any:
    import urllib.request

    req = urllib.request.Request(
        cloud.base_url + "/api/v1" + path,
        data=orjson.dumps(body),
        method="PUT",
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return orjson.loads(resp.read())


def test_rule_put_names_unknown_parameters(cloud: CloudStack) -> None:
    token = cloud.token()
    with pytest.raises(urllib.error.HTTPError) as e:
        _put(cloud, "/rules/overspeed", {"params": {"limt_kmh": 90}}, token)
    err = orjson.loads(e.value.read())["error"]
    assert e.value.code == 422 and "limt_kmh" in err["message"] and "limit_kmh" in err["message"]
    ok = _put(cloud, "/rules/idling", {"params": {"min_duration_s": 600}}, token)
    assert ok["params"] == {"min_duration_s": 600}


def test_processing_has_one_owner(cloud: CloudStack) -> None:
    """The serve process holds the processing advisory lock (locks are per database;
    other test sessions on this server hold the same key in theirs)."""
    from fleet_cloud.processing.service import LOCK_KEY
    from tests.harness import db_fetch

    def held() -> bool:
        rows = db_fetch(
            cloud.dsn,
            """SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND ((classid::bigint << 32) | objid::bigint) = $1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
            LOCK_KEY,
        )
        return bool(rows[0]["n"] == 1)

    wait_until(held, 20, "the processing advisory lock to be held")


def test_routes_and_public_tracking_link(cloud: CloudStack) -> None:
    token = cloud.token()
    vid = cloud.register_vehicle("Route van", "route-van-1")
    now = int(time.time())
    body = {
        "vehicle_id": vid,
        "name": "Afternoon deliveries",
        "planned_start": now - 600,
        "planned_end": now + 7200,
        "stops": [
            {"name": "Bakery", "lat": 48.14, "lon": 11.58},
            {"name": "Florist", "lat": 48.15, "lon": 11.59, "radius_m": 50},
        ],
    }
    route = api(cloud, "/routes", body, token)
    assert [s["status"] for s in route["stops"]] == ["planned", "planned"]
    tok = route["stops"][1]["share_token"]
    # The tracking link needs no login and shows only that delivery.
    doc = api(cloud, f"/track/{tok}")
    assert doc["stop"] == "Florist" and doc["status"] == "planned"
    assert set(doc) == {"stop", "status", "window_start", "window_end", "arrived_at",
                        "departed_at", "eta", "vehicle"}  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as e:
        api(cloud, "/track/" + "x" * 24)
    assert e.value.code == 404
    got = api(cloud, f"/routes/{route['id']}", None, token)
    assert got["stops"][0]["name"] == "Bakery"
    # A dispatcher settles the second stop by hand; the tracking link follows.
    stop = route["stops"][1]
    path = f"/routes/{route['id']}/stops/{stop['id']}/status"
    manual = _put(cloud, path, {"status": "skipped"}, token)
    assert (manual["status"], manual["status_source"], manual["auto_status"]) == (
        "skipped", "manual", "planned"
    )  # fmt: skip
    assert api(cloud, f"/track/{tok}")["status"] == "skipped"
    back = _put(cloud, path, {"status": None}, token)
    assert (back["status"], back["status_source"]) == ("planned", "auto")
    bad = {**body, "planned_end": now - 7200}
    status, err = api_error(cloud, "/routes", bad, token)
    assert status == 422 and err["field"] == "planned_end"


def test_trips_and_daily_behaviour_over_the_api(cloud: CloudStack) -> None:
    from tests.processing.drives import build

    token = cloud.token()
    vid = cloud.register_vehicle("Behaviour van", "behaviour-van-1")
    start = (int(time.time()) - 3600) * 1000
    d = build([("drive", 420), ("park", 420)], seed=3, start_ms=start)
    cloud.publish_fixes("behaviour-van-1", d.fixes)

    def closed_trip() -> bool:
        trips = api(cloud, f"/vehicles/{vid}/trips", None, token)
        return bool(trips) and trips[0]["end"] is not None

    wait_until(closed_trip, 30, "the trip to close")
    (trip,) = api(cloud, f"/vehicles/{vid}/trips", None, token)
    assert trip["end_reason"] == "parked" and trip["fuel_source"] == "maf"
    days = api(cloud, f"/vehicles/{vid}/behaviour?tz=Europe/Berlin", None, token)
    assert sum(x["trips"] for x in days) == 1
    assert days[-1]["score"] == pytest.approx(trip["score"], abs=0.1)
    with pytest.raises(urllib.error.HTTPError) as e:
        api(cloud, f"/vehicles/{vid}/behaviour?tz=Mars/Base", None, token)
    assert e.value.code == 422
    odo = api(cloud, f"/vehicles/{vid}/odometer", None, token)
    assert odo["source"] == "gps" and odo["odometer_km"] == pytest.approx(
        trip["distance_m"] / 1000, rel=0.05
    )
    assert odo["engine_hours"] > 0 and odo["as_of"] == d.fixes[-1]["t"]


def test_geofence_replace_and_delete(cloud: CloudStack) -> None:
    import urllib.request

    token = cloud.token()
    ring = [[11.50, 48.10], [11.52, 48.10], [11.52, 48.12], [11.50, 48.12], [11.50, 48.10]]
    hole = [[11.505, 48.105], [11.505, 48.11], [11.51, 48.11], [11.51, 48.105], [11.505, 48.105]]
    body = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring, hole]},
        "properties": {"name": "Depot", "speed_limit_kmh": 20,
                       "active_hours": {"days": [0, 1, 2, 3, 4], "start": "06:00",
                                        "end": "20:00", "tz": "Europe/Berlin"}},
    }  # fmt: skip
    g = api(cloud, "/geofences", body, token)
    assert g["properties"]["kind"] == "polygon" and g["properties"]["active_hours"]["tz"]
    body["properties"]["name"] = "Depot north"
    body["geometry"] = {"type": "LineString", "coordinates": ring[:3]}
    body["properties"]["width_m"] = 40
    g2 = _put(cloud, f"/geofences/{g['id']}", body, token)
    assert g2["properties"]["name"] == "Depot north" and g2["properties"]["kind"] == "corridor"
    req = urllib.request.Request(
        cloud.base_url + f"/api/v1/geofences/{g['id']}",
        method="DELETE",
        headers={"authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    with pytest.raises(urllib.error.HTTPError) as e:
        api(cloud, f"/geofences/{g['id']}", None, token)
    assert e.value.code == 404


def test_vehicle_groups_scope_geofences(cloud: CloudStack) -> None:
    import urllib.request

    token = cloud.token()
    a = cloud.register_vehicle("Reefer 1", "reefer-1")
    b = cloud.register_vehicle("Reefer 2", "reefer-2")
    grp = api(cloud, "/vehicle-groups", {"name": "Refrigerated", "vehicle_ids": [a]}, token)
    assert grp["vehicle_ids"] == [a]
    grp = _put(cloud, f"/vehicle-groups/{grp['id']}/vehicles", [a, b], token)
    assert grp["vehicle_ids"] == sorted([a, b])
    status, err = api_error(
        cloud, "/vehicle-groups", {"name": "Bad", "vehicle_ids": [999_999]}, token
    )
    assert status == 422 and "999999" in err["message"]
    g = api(cloud, "/geofences", circle("Cold store", 48.3, 11.7, 100, group_id=grp["id"]), token)
    assert g["properties"]["group_id"] == grp["id"]
    status, err = api_error(
        cloud, "/geofences", circle("x", 48.3, 11.7, 100, group_id=grp["id"], vehicle_id=a), token
    )
    assert status == 422 and "one of" in err["message"]
    req = urllib.request.Request(
        cloud.base_url + f"/api/v1/vehicle-groups/{grp['id']}",
        method="DELETE",
        headers={"authorization": f"Bearer {token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 409
    assert str(g["id"]) in orjson.loads(e.value.read())["error"]["message"]
