"""Refresh-token rotation with reuse detection, logout, the login limit, and
WebSocket connections ending when their token expires."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import orjson
import pytest
import websockets

from tests.auth.conftest import PASSWORD, AuthCloud


def test_login_keeps_the_dashboard_fields_and_adds_a_refresh_token(auth_cloud: AuthCloud) -> None:
    doc = auth_cloud.login(auth_cloud.users["viewer"])
    assert doc["token_type"] == "bearer" and doc["expires_in"] > 0
    assert doc["user"]["role"] == "viewer" and doc["user"]["email"].startswith("viewer-")
    assert doc["refresh_token"].startswith("frt_") and doc["refresh_expires_in"] > 0
    claims = jwt.decode(doc["access_token"], auth_cloud.secret, algorithms=["HS256"])
    assert {"exp", "iat", "jti", "sid", "sub", "tid", "role"} <= set(claims)
    # only a hash of the refresh token is stored
    stored = "SELECT count(*) FROM refresh_tokens WHERE token_sha256 = {}"
    token = doc["refresh_token"]
    assert auth_cloud.db(stored.format("sha256(convert_to($1, 'UTF8'))"), token) == 1
    assert auth_cloud.db(stored.format("convert_to($1, 'UTF8')"), token) == 0


def test_refresh_rotates_and_a_reused_token_revokes_the_session(auth_cloud: AuthCloud) -> None:
    first = auth_cloud.login(auth_cloud.users["dispatcher"])
    second = auth_cloud.call(
        "POST", "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert second.status == 200, second.body
    new = second.body
    assert new["refresh_token"] != first["refresh_token"]
    assert new["access_token"] != first["access_token"]
    assert new["user"]["role"] == "dispatcher"
    assert auth_cloud.call("GET", "/api/v1/vehicles", token=new["access_token"]).status == 200
    # the old refresh token again: someone holds a copy, so the whole family ends
    again = auth_cloud.call(
        "POST", "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert again.status == 401 and again.error_code() == "refresh_token_reused"
    after = auth_cloud.call("POST", "/api/v1/auth/refresh", {"refresh_token": new["refresh_token"]})
    assert after.status == 401 and after.error_code() == "invalid_refresh_token"
    for token in (first["access_token"], new["access_token"]):
        a = auth_cloud.call("GET", "/api/v1/vehicles", token=token)
        assert a.status == 401 and a.error_code() == "token_revoked"
    # another session of the same user is untouched
    other = auth_cloud.login(auth_cloud.users["dispatcher"])
    assert auth_cloud.call("GET", "/api/v1/vehicles", token=other["access_token"]).status == 200


def test_unknown_refresh_token_is_401(auth_cloud: AuthCloud) -> None:
    a = auth_cloud.call("POST", "/api/v1/auth/refresh", {"refresh_token": "frt_nothing"})
    assert a.status == 401 and a.error_code() == "invalid_refresh_token"


def test_logout_revokes_the_access_token_and_the_refresh_family(auth_cloud: AuthCloud) -> None:
    doc = auth_cloud.login(auth_cloud.users["manager"])
    token = doc["access_token"]
    assert auth_cloud.call("POST", "/api/v1/auth/logout", token=token).status == 204
    a = auth_cloud.call("GET", "/api/v1/vehicles", token=token)
    assert a.status == 401 and a.error_code() == "token_revoked"
    r = auth_cloud.call("POST", "/api/v1/auth/refresh", {"refresh_token": doc["refresh_token"]})
    assert r.status == 401
    jti = jwt.decode(token, auth_cloud.secret, algorithms=["HS256"])["jti"]
    assert auth_cloud.db("SELECT expires_at > now() FROM revoked_jtis WHERE jti = $1", jti)
    # logging out twice is refused like any other revoked token
    assert auth_cloud.call("POST", "/api/v1/auth/logout", token=token).status == 401


def test_failed_logins_are_limited_per_email_and_ip(auth_cloud: AuthCloud) -> None:
    email = auth_cloud.users["installer"]
    for _ in range(10):
        a = auth_cloud.call("POST", "/api/v1/auth/login", {"email": email, "password": "wrong"})
        assert a.status == 401
    for password in ("wrong", None):  # locked: even the right password waits
        body = {"email": email, "password": password or PASSWORD}
        a = auth_cloud.call("POST", "/api/v1/auth/login", body)
        assert a.status == 429 and a.error_code() == "too_many_attempts"
        assert 1 <= int(a.headers["retry-after"]) <= 60
    # other accounts from the same address are not affected
    assert auth_cloud.login(auth_cloud.users["viewer"])["user"]["role"] == "viewer"


def test_successful_logins_are_not_limited(auth_cloud: AuthCloud) -> None:
    for _ in range(15):
        auth_cloud.login(auth_cloud.users["owner"])


async def test_websocket_closes_with_1008_when_the_token_expires(auth_cloud: AuthCloud) -> None:
    good = await asyncio.to_thread(auth_cloud.token)
    claims = jwt.decode(good, auth_cloud.secret, algorithms=["HS256"])
    now = int(time.time())
    short = jwt.encode(
        {**claims, "jti": uuid.uuid4().hex, "iat": now, "exp": now + 2},
        auth_cloud.secret,
        algorithm="HS256",
    )
    url = auth_cloud.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={short}"
    async with websockets.connect(url, origin=auth_cloud.base_url) as ws:  # type: ignore[arg-type]
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            async with asyncio.timeout(20):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "expired" in closed.value.rcvd.reason


async def test_websocket_refuses_a_revoked_token(auth_cloud: AuthCloud) -> None:
    token = await asyncio.to_thread(auth_cloud.token)
    out = await asyncio.to_thread(auth_cloud.call, "POST", "/api/v1/auth/logout", None, token)
    assert out.status == 204
    url = auth_cloud.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={token}"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(url, origin=auth_cloud.base_url):  # type: ignore[arg-type]
            pass
