"""API keys: shown once, stored hashed, scoped to their tenant and role, revocable."""

from __future__ import annotations

from tests.auth.conftest import AuthCloud

GEOFENCE = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
    "properties": {"name": "Key depot", "radius_m": 100},
}


def test_key_lifecycle(auth_cloud: AuthCloud) -> None:
    owner = auth_cloud.token("owner")
    made = auth_cloud.call(
        "POST", "/api/v1/api-keys", {"name": "erp sync", "role": "dispatcher"}, owner
    )
    assert made.status == 201, made.body
    key = made.body["key"]
    assert key.startswith("fak_") and made.body["prefix"] == key[:12]
    assert (
        auth_cloud.db(
            "SELECT count(*) FROM api_keys WHERE key_sha256 = sha256(convert_to($1, 'UTF8'))", key
        )
        == 1
    )
    listed = auth_cloud.call("GET", "/api/v1/api-keys", token=owner).body
    (mine,) = [k for k in listed if k["id"] == made.body["id"]]
    assert "key" not in mine and mine["role"] == "dispatcher"  # shown once only

    # usable as a bearer token, with the key's role (dispatcher: no geofence edits)
    assert auth_cloud.call("GET", "/api/v1/vehicles", token=key).status == 200
    denied = auth_cloud.call("POST", "/api/v1/geofences", GEOFENCE, key)
    assert denied.status == 403 and denied.error_code() == "forbidden"
    listed = auth_cloud.call("GET", "/api/v1/api-keys", token=owner).body
    (mine,) = [k for k in listed if k["id"] == made.body["id"]]
    assert mine["last_used_at"] is not None

    # a key does not mint keys, and has no session to log out of
    assert auth_cloud.call("POST", "/api/v1/api-keys", {"name": "x"}, key).status == 403
    assert auth_cloud.call("POST", "/api/v1/auth/logout", token=key).status == 400

    gone = auth_cloud.call("DELETE", f"/api/v1/api-keys/{made.body['id']}", token=owner)
    assert gone.status == 204
    a = auth_cloud.call("GET", "/api/v1/vehicles", token=key)
    assert a.status == 401 and a.error_code() == "invalid_token"
    assert (
        auth_cloud.call("DELETE", f"/api/v1/api-keys/{made.body['id']}", token=owner).status == 404
    )


def test_an_editor_key_can_write(auth_cloud: AuthCloud) -> None:
    owner = auth_cloud.token("owner")
    key = auth_cloud.call(
        "POST", "/api/v1/api-keys", {"name": "gis", "role": "manager"}, owner
    ).body["key"]
    made = auth_cloud.call("POST", "/api/v1/geofences", GEOFENCE, key)
    assert made.status == 201, made.body
    assert (
        auth_cloud.call("DELETE", f"/api/v1/geofences/{made.body['id']}", token=key).status == 204
    )


def test_who_may_make_keys(auth_cloud: AuthCloud) -> None:
    body = {"name": "k", "role": "viewer"}
    for role in ("dispatcher", "viewer", "installer"):
        a = auth_cloud.call("POST", "/api/v1/api-keys", body, auth_cloud.token(role))
        assert a.status == 403, role
    manager = auth_cloud.token("manager")
    assert auth_cloud.call("POST", "/api/v1/api-keys", body, manager).status == 201
    a = auth_cloud.call("POST", "/api/v1/api-keys", {"name": "k", "role": "owner"}, manager)
    assert a.status == 403 and a.body["error"]["field"] == "role"
    a = auth_cloud.call("POST", "/api/v1/api-keys", {"name": "k", "role": "root"}, manager)
    assert a.status == 422 and a.body["error"]["field"] == "role"


def test_unknown_key_is_401(auth_cloud: AuthCloud) -> None:
    a = auth_cloud.call("GET", "/api/v1/vehicles", token="fak_" + "x" * 43)
    assert a.status == 401 and a.error_code() == "invalid_token"
