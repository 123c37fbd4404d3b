"""Tenant isolation, generated from the OpenAPI document: for every operation whose
path names an id, tenant A's token on tenant B's id answers 404, while B's own token
on the same request succeeds (so the 404 is the tenancy, not a bad request).

The same for WebSocket subscriptions to B's vehicles and fleets."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import orjson
import pytest
import websockets

from tests.auth.conftest import AuthCloud

GEOFENCE = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
    "properties": {"name": "B depot", "radius_m": 100},
}
# Request bodies of the id operations that take one (valid for B's resources).
BODIES: dict[tuple[str, str], object] = {
    ("put", "/api/v1/geofences/{geofence_id}"): GEOFENCE,
    ("put", "/api/v1/routes/{route_id}/stops/{stop_id}/status"): {"status": "skipped"},
    ("put", "/api/v1/vehicle-groups/{group_id}/vehicles"): [],
    ("patch", "/api/v1/users/{user_id}"): {"role": "dispatcher"},
    ("patch", "/api/v1/fleets/{fleet_id}"): {"name": "B fleet (renamed)"},
    ("patch", "/api/v1/vehicles/{vehicle_id}"): {"plate": "B-ISO 1"},
    ("post", "/api/v1/vehicles/{vehicle_id}/claims"): {},
}
# Deletes of resources the other operations (and the WebSocket test) still use take a
# spare of the same kind instead.
SPARES: dict[tuple[str, str], dict[str, str]] = {
    ("delete", "/api/v1/vehicles/{vehicle_id}"): {"vehicle_id": "spare_vehicle_id"},
    ("delete", "/api/v1/fleets/{fleet_id}"): {"fleet_id": "spare_fleet_id"},
}


async def _b_directory(ac: AuthCloud, device: str) -> tuple[int, int, int, int, int]:
    """(vehicle id, fleet id, event id, spare vehicle id, spare empty fleet id) in tenant B."""
    import asyncpg

    from fleet_cloud import directory

    conn = await asyncpg.connect(ac.stack.dsn)
    try:
        tid = await directory.ensure_tenant(conn, ac.tenant_b)
        fid = await directory.ensure_fleet(conn, tid, "B fleet")
        vid = await directory.ensure_vehicle_with_device(conn, tid, fid, f"B van {device}", device)
        eid = await conn.fetchval(
            """INSERT INTO events (tenant_id, vehicle_id, type, fix_key, fix_time, decided_time,
                                   severity)
               VALUES ($1, $2, 'overspeed', $3, now(), now(), 'warning') RETURNING id""",
            tid,
            vid,
            f"{device}:1:1",
        )
        spare_fid = await directory.ensure_fleet(conn, tid, f"B spare fleet {device}")
        spare_vid = await conn.fetchval(
            "INSERT INTO vehicles (tenant_id, name) VALUES ($1, $2) RETURNING id",
            tid,
            f"B spare van {device}",
        )
        return vid, fid, int(eid), int(spare_vid), spare_fid
    finally:
        await conn.close()


def _b_resources(ac: AuthCloud) -> dict[str, Any]:
    """One resource of every kind tenant B can have, keyed by path parameter name."""
    device = "iso-b-" + uuid.uuid4().hex[:8]
    vid, fid, eid, spare_vid, spare_fid = asyncio.run(_b_directory(ac, device))
    b = ac.token_b()

    def made(path: str, body: object) -> dict[str, Any]:
        a = ac.call("POST", path, body, b)
        assert a.status == 201, (path, a.body)
        return dict(a.body)

    now = time.time()
    route = made(
        "/api/v1/routes",
        {
            "vehicle_id": vid,
            "name": "B route",
            "planned_start": _iso(now),
            "planned_end": _iso(now + 3600),
            "stops": [{"name": "B stop", "lat": 52.5, "lon": 13.4}],
        },
    )
    return {
        "device": device,
        "fleet_id": fid,
        "vehicle_id": vid,
        "event_id": eid,
        "geofence_id": made("/api/v1/geofences", GEOFENCE)["id"],
        "webhook_id": made("/api/v1/webhooks", {"url": "https://example.com/b-hook"})["id"],
        "recipient_id": made("/api/v1/email-recipients", {"address": "ops@b.test"})["id"],
        "route_id": route["id"],
        "stop_id": route["stops"][0]["id"],
        "group_id": made("/api/v1/vehicle-groups", {"name": "B group"})["id"],
        "key_id": made("/api/v1/api-keys", {"name": "B key", "role": "viewer"})["id"],
        "device_id": device,
        "spare_vehicle_id": spare_vid,
        "spare_fleet_id": spare_fid,
        "user_id": made(
            "/api/v1/users",
            {"email": f"{device}@b.test", "password": "pw-" + uuid.uuid4().hex, "role": "viewer"},
        )["id"],
        "claim_id": made(f"/api/v1/vehicles/{vid}/claims", {})["id"],
    }


def _raw_call(url: str, method: str, body: object | None, token: str) -> tuple[int, bytes]:
    """Status and raw body: exports answer CSV or GPX, not JSON."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", "authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _filled(path: str, ids: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _id_operations(doc: dict[str, Any]) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            if names:
                ops.append((method, path, names, op))
    # deletes last: the other operations still need the resources
    return sorted(ops, key=lambda o: (o[0] == "delete", o[1]))


@pytest.fixture(scope="module")
def b_resources(auth_cloud: AuthCloud) -> dict[str, Any]:
    return _b_resources(auth_cloud)


def test_another_tenants_ids_answer_404(auth_cloud: AuthCloud, b_resources: dict[str, Any]) -> None:
    doc = auth_cloud.call("GET", "/api/v1/openapi.json").body
    a_token, b_token = auth_cloud.token("owner"), auth_cloud.token_b()
    tested, skipped = [], []
    for method, path, names, op in _id_operations(doc):
        where = f"{method.upper()} {path}"
        not_ids = [n for n in names if not n.endswith("_id")]
        unknown = [n for n in names if n.endswith("_id") and n not in b_resources]
        if not_ids or unknown:
            skipped.append(f"{where} ({', '.join(not_ids + unknown)}: not an id we can create)")
            continue
        body = BODIES.get((method, path))
        if body is None and op.get("requestBody", {}).get("required"):
            skipped.append(f"{where} (no test body)")
            continue
        ids = {
            **b_resources,
            **{k: b_resources[v] for k, v in SPARES.get((method, path), {}).items()},
        }
        url = _filled(path, ids)
        theirs = auth_cloud.call(method.upper(), url, body, a_token)
        assert theirs.status == 404, (where, theirs.status, theirs.body)
        assert theirs.error_code() == "not_found", where
        status, raw = _raw_call(auth_cloud.base_url + url, method.upper(), body, b_token)
        assert 200 <= status < 300, (where, "control with B's token", status, raw[:500])
        tested.append(where)
    print(f"\ntenant isolation: {len(tested)} operations tested")
    print("skipped:\n  " + "\n  ".join(skipped or ["none"]))
    assert len(tested) >= 15, tested


async def test_websocket_subscriptions_to_another_tenant_see_nothing(
    auth_cloud: AuthCloud, b_resources: dict[str, Any]
) -> None:
    vid, fid, device = b_resources["vehicle_id"], b_resources["fleet_id"], b_resources["device"]
    t0 = int(time.time() * 1000) - 60_000
    await asyncio.to_thread(
        auth_cloud.stack.publish_fixes, device, [{"seq": 1, "t": t0, "lat": 52.5, "lon": 13.4}]
    )
    a_token = await asyncio.to_thread(auth_cloud.token, "owner")
    b_token = await asyncio.to_thread(auth_cloud.token_b)
    ws_url = auth_cloud.base_url.replace("http://", "ws://") + "/api/v1/ws?token="
    origin = auth_cloud.base_url
    async with (
        websockets.connect(ws_url + a_token, origin=origin) as a_ws,  # type: ignore[arg-type]
        websockets.connect(ws_url + b_token, origin=origin) as b_ws,  # type: ignore[arg-type]
    ):
        await a_ws.send(orjson.dumps({"type": "subscribe", "vehicles": [vid]}).decode())
        err = await _next_of(a_ws, "error")
        assert err["code"] == "not_found" and str(vid) in str(err["message"])
        snap = await _next_of(a_ws, "snapshot")
        assert vid not in [v["vehicle_id"] for v in snap["vehicles"]]
        await a_ws.send(orjson.dumps({"type": "subscribe", "fleets": [fid]}).decode())
        snap = await _next_of(a_ws, "snapshot")
        assert vid not in [v["vehicle_id"] for v in snap["vehicles"]]
        # the control: B sees its own vehicle, and gets its next fix
        await b_ws.send(orjson.dumps({"type": "subscribe", "vehicles": [vid]}).decode())
        snap = await _next_of(b_ws, "snapshot")
        assert [v["vehicle_id"] for v in snap["vehicles"]] == [vid]
        await asyncio.to_thread(
            auth_cloud.stack.publish_fixes,
            device,
            [{"seq": 2, "t": t0 + 1000, "lat": 52.5001, "lon": 13.4}],
        )
        frame = await _next_of(b_ws, "positions")
        assert vid in [v["vehicle_id"] for v in frame["vehicles"]]
        # ... which A, subscribed to B's ids (and to everything of its own), never gets
        await a_ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        await _next_of(a_ws, "snapshot")
        await asyncio.to_thread(
            auth_cloud.stack.publish_fixes,
            device,
            [{"seq": 3, "t": t0 + 2000, "lat": 52.5002, "lon": 13.4}],
        )
        await _next_of(b_ws, "positions")
        await asyncio.sleep(1)  # several ticks for A's frames to have arrived, if any
        while True:
            try:
                async with asyncio.timeout(0.2):
                    frame = orjson.loads(await a_ws.recv())
            except TimeoutError:
                break
            assert vid not in [v.get("vehicle_id") for v in frame.get("vehicles", [])], frame


async def _next_of(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == kind:
                return frame
