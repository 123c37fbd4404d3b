"""HTTP API and WebSocket hub against the running cloud."""

from __future__ import annotations

import asyncio
import time
import urllib.error

import orjson
import pytest
import websockets

from tests.harness import CloudStack, http_json

T0 = int(time.time() * 1000) - 120_000


def test_login_errors_have_one_shape(cloud: CloudStack) -> None:
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(cloud.base_url + "/api/v1/auth/login", {"email": cloud.email, "password": "no"})
    assert e.value.code == 401
    assert orjson.loads(e.value.read())["error"]["code"] == "invalid_credentials"
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(cloud.base_url + "/api/v1/auth/login", {"email": cloud.email})
    assert e.value.code == 422
    assert orjson.loads(e.value.read())["error"]["field"] == "password"
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(cloud.base_url + "/api/v1/vehicles")
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(cloud.base_url + "/api/v1/vehicles", token="not.a.jwt")
    assert e.value.code == 401


def test_vehicles_show_latest_state_and_history_in_fix_time_order(cloud: CloudStack) -> None:
    vid = cloud.register_vehicle("History van", "history-van")
    # delivered out of order: the backlog (older fixes) after the newest one
    cloud.publish_fixes("history-van", [{"seq": 3, "t": T0 + 3000, "lat": 52.3, "lon": 13.3}])
    cloud.publish_fixes(
        "history-van",
        [
            {"seq": s, "t": T0 + s * 1000, "lat": 52.0 + s / 10, "lon": 13.0 + s / 10}
            for s in (1, 2)
        ],
    )
    token = cloud.token()
    vehicles = http_json(cloud.base_url + "/api/v1/vehicles", token=token)
    assert isinstance(vehicles, list)
    (mine,) = [v for v in vehicles if v["id"] == vid]
    assert mine["device_id"] == "history-van"
    assert mine["state"]["t"] == T0 + 3000 and mine["state"]["lat"] == 52.3  # newest by fix time
    doc = http_json(cloud.base_url + f"/api/v1/vehicles/{vid}/positions", token=token)
    assert isinstance(doc, dict)
    assert [p["t"] for p in doc["positions"]] == [T0 + 1000, T0 + 2000, T0 + 3000]
    assert doc["positions"][0]["lat"] == pytest.approx(52.1)


def test_positions_range_is_validated(cloud: CloudStack) -> None:
    vid = cloud.register_vehicle("Range van", "range-van")
    token = cloud.token()
    url = cloud.base_url + f"/api/v1/vehicles/{vid}/positions"
    for query, code in [
        ("?from=2026-01-10T00:00:00Z&to=2026-01-01T00:00:00Z", "invalid_request"),
        ("?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "range_too_long"),
        ("?from=yesterday", "invalid_request"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as e:
            http_json(url + query, token=token)
        assert e.value.code == 422
        assert orjson.loads(e.value.read())["error"]["code"] == code


def test_another_tenants_vehicle_is_not_found(cloud: CloudStack) -> None:
    import asyncpg

    from fleet_cloud import directory

    async def other_tenant_vehicle() -> int:
        conn = await asyncpg.connect(cloud.dsn)
        try:
            tid = await directory.ensure_tenant(conn, "someone-else")
            return await directory.ensure_vehicle_with_device(conn, tid, None, "Theirs", "theirs-1")
        finally:
            await conn.close()

    theirs = asyncio.run(other_tenant_vehicle())
    token = cloud.token()
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(cloud.base_url + f"/api/v1/vehicles/{theirs}/positions", token=token)
    assert e.value.code == 404
    vehicles = http_json(cloud.base_url + "/api/v1/vehicles", token=token)
    assert isinstance(vehicles, list) and theirs not in [v["id"] for v in vehicles]


def _ws_url(cloud: CloudStack, token: str) -> str:
    return cloud.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={token}"


async def _next_of(ws: websockets.ClientConnection, kind: str) -> dict[str, object]:
    async with asyncio.timeout(10):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == kind:
                return frame  # type: ignore[no-any-return]


async def test_websocket_snapshot_then_coalesced_updates(cloud: CloudStack) -> None:
    vid = await asyncio.to_thread(cloud.register_vehicle, "Live van", "live-van")
    await asyncio.to_thread(
        cloud.publish_fixes, "live-van", [{"seq": 1, "t": T0, "lat": 52.5, "lon": 13.4}]
    )
    token = await asyncio.to_thread(cloud.token)
    async with websockets.connect(_ws_url(cloud, token), origin=cloud.base_url) as ws:  # type: ignore[arg-type]
        await ws.send(orjson.dumps({"type": "subscribe", "vehicles": [vid]}).decode())
        snap = await _next_of(ws, "snapshot")
        assert [v["vehicle_id"] for v in snap["vehicles"]] == [vid]
        assert "tenant_id" not in snap["vehicles"][0]
        # ten fixes in one burst: the client gets the latest, not ten frames' worth of queue
        burst = [
            {"seq": s, "t": T0 + s * 100, "lat": 52.5 + s / 1000, "lon": 13.4} for s in range(2, 12)
        ]
        await asyncio.to_thread(cloud.publish_fixes, "live-van", burst)
        frame = await _next_of(ws, "positions")
        (state,) = [v for v in frame["vehicles"] if v["vehicle_id"] == vid]
        assert state["t"] == T0 + 1100 and state["lat"] == pytest.approx(52.511)
        # ids of nothing (or of another tenant) are refused like REST 404s
        await ws.send(orjson.dumps({"type": "subscribe", "vehicles": [999_999]}).decode())
        err = await _next_of(ws, "error")
        assert err["code"] == "not_found"


async def test_websocket_refuses_bad_token_and_foreign_origin(cloud: CloudStack) -> None:
    token = await asyncio.to_thread(cloud.token)
    for url, origin in [
        (_ws_url(cloud, "garbage"), cloud.base_url),
        (_ws_url(cloud, token), "http://evil.example"),
    ]:
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(url, origin=origin):  # type: ignore[arg-type]
                pass


def test_migrations_rerun_is_a_no_op(cloud: CloudStack) -> None:
    import subprocess

    from tests.harness import tool

    out = subprocess.run(
        [tool("fleet-cloud"), "migrate", "--dsn", cloud.dsn],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "nothing (up to date)" in out.stdout


async def test_tokens_never_reach_the_log(cloud: CloudStack) -> None:
    token = await asyncio.to_thread(cloud.token)
    async with websockets.connect(_ws_url(cloud, token), origin=cloud.base_url) as ws:  # type: ignore[arg-type]
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        await _next_of(ws, "snapshot")
    assert cloud.proc is not None
    log = cloud.proc.log()
    assert "token=<redacted>" in log and token not in log


def test_a_users_email_cannot_move_to_another_tenant(cloud: CloudStack) -> None:
    import subprocess

    from tests.harness import tool

    out = subprocess.run(
        [tool("fleet-cloud"), "add-user", cloud.email, "--password", "x", "--tenant", "other",
         "--dsn", cloud.dsn],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1
    assert "already belongs to another tenant" in out.stderr
    cloud.token()  # the existing login still works


def test_history_columns_and_downsampling(cloud: CloudStack) -> None:
    vid = cloud.register_vehicle("Columns van", "columns-van")
    t0 = T0 - 3_600_000
    fixes = [
        {"seq": s, "t": t0 + s * 1000, "lat": 52.0 + s / 1e5, "lon": 13.0,
         "spd": s % 90 + 0.3, "hdg": s % 360 + 0.2, "alt": 34.1, "hdop": 1.34}
        for s in range(1, 601)
    ]  # fmt: skip
    cloud.publish_fixes("columns-van", fixes)
    token = cloud.token()
    base = f"{cloud.base_url}/api/v1/vehicles/{vid}/positions"
    rows = http_json(base, token=token)
    cols = http_json(base + "?format=columns", token=token)
    assert isinstance(rows, dict) and isinstance(cols, dict)
    assert cols["t"] == [p["t"] for p in rows["positions"]] == [f["t"] for f in fixes]
    assert cols["lat"] == [p["lat"] for p in rows["positions"]]
    assert cols["vehicle_id"] == vid and len(cols["spd"]) == 600
    # Values stored as float4 come back as sent, not as 40.29999923706055.
    assert cols["spd"] == [p["spd"] for p in rows["positions"]] == [f["spd"] for f in fixes]
    assert cols["hdg"] == [f["hdg"] for f in fixes]
    assert {(p["alt"], p["hdop"]) for p in rows["positions"]} == {(34.1, 1.34)}
    # 24 h cut into 50 buckets of ~29 min: the 10-minute drive falls into one or two,
    # and the last fix of the range is always kept.
    small = http_json(base + "?format=columns&max_points=50", token=token)
    assert isinstance(small, dict) and 2 <= len(small["t"]) <= 3
    assert small["t"][0] == fixes[0]["t"] and small["t"][-1] == fixes[-1]["t"]
    empty = http_json(
        base + "?format=columns&from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z", token=token
    )
    assert empty == {"vehicle_id": vid, "t": [], "lat": [], "lon": [], "spd": [], "hdg": []}
