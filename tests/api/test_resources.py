"""Users, fleets (nested), vehicles and devices over REST, against a real cloud:
what each call stores, who may call it, and the errors that name the field."""

from __future__ import annotations

import uuid

from tests.auth.conftest import PASSWORD, AuthCloud


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_owner_manages_users_and_a_role_change_ends_their_sessions(auth_cloud: AuthCloud) -> None:
    owner = auth_cloud.token("owner")
    email = _uniq("new") + "@a.test"
    made = auth_cloud.call(
        "POST", "/api/v1/users", {"email": email, "password": PASSWORD, "role": "viewer"}, owner
    )
    assert made.status == 201, made.body
    uid = made.body["id"]
    assert made.body["role"] == "viewer" and "password" not in str(made.body)
    assert email in [u["email"] for u in auth_cloud.call("GET", "/api/v1/users", None, owner).body]
    # the new user signs in; a manager may list users but not create or change them
    their = auth_cloud.login(email)["access_token"]
    manager = auth_cloud.token("manager")
    assert auth_cloud.call("GET", f"/api/v1/users/{uid}", None, manager).status == 200
    denied = auth_cloud.call("PATCH", f"/api/v1/users/{uid}", {"role": "owner"}, manager)
    assert denied.status == 403 and denied.error_code() == "forbidden"
    # the owner promotes them: their old token (which says "viewer") stops working
    a = auth_cloud.call("PATCH", f"/api/v1/users/{uid}", {"role": "dispatcher"}, owner)
    assert a.status == 200 and a.body["role"] == "dispatcher", a.body
    gone = auth_cloud.call("GET", "/api/v1/vehicles", None, their)
    assert gone.status == 401 and gone.error_code() == "token_revoked"
    assert auth_cloud.login(email)["user"]["role"] == "dispatcher"
    # the same email again is a conflict, named
    dup = auth_cloud.call("POST", "/api/v1/users", {"email": email, "password": PASSWORD}, owner)
    assert dup.status == 409 and dup.body["error"]["field"] == "email"
    short = auth_cloud.call("POST", "/api/v1/users", {"email": "x@a.test", "password": "1"}, owner)
    assert short.status == 422 and short.body["error"]["field"] == "password"
    assert auth_cloud.call("DELETE", f"/api/v1/users/{uid}", None, owner).status == 204
    assert auth_cloud.call("GET", f"/api/v1/users/{uid}", None, owner).status == 404
    assert auth_cloud.call("POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD}
                           ).status == 401  # fmt: skip


def test_the_last_owner_stays_and_nobody_deletes_themselves(auth_cloud: AuthCloud) -> None:
    b = auth_cloud.token_b()  # tenant B has exactly one owner
    me = next(u for u in auth_cloud.call("GET", "/api/v1/users", None, b).body
              if u["email"] == auth_cloud.owner_b)  # fmt: skip
    demote = auth_cloud.call("PATCH", f"/api/v1/users/{me['id']}", {"role": "manager"}, b)
    assert demote.status == 409 and demote.error_code() == "last_owner"
    self_delete = auth_cloud.call("DELETE", f"/api/v1/users/{me['id']}", None, b)
    assert self_delete.status == 409
    assert auth_cloud.login(auth_cloud.owner_b)["user"]["role"] == "owner"


def test_fleets_nest_and_list_the_vehicles_under_them(auth_cloud: AuthCloud) -> None:
    t = auth_cloud.token("manager")

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        a = auth_cloud.call("POST", path, body, t)
        assert a.status == 201, (path, a.body)
        return dict(a.body)

    region = post("/api/v1/fleets", {"name": _uniq("North")})
    depot = post("/api/v1/fleets", {"name": _uniq("Depot"), "parent_id": region["id"]})
    van = post(
        "/api/v1/vehicles", {"name": _uniq("van"), "plate": "B-FL 1", "fleet_id": depot["id"]}
    )
    car = post("/api/v1/vehicles", {"name": _uniq("car"), "fleet_id": region["id"]})
    assert van["fleet_id"] == depot["id"] and van["plate"] == "B-FL 1" and van["device_id"] is None

    def names(path: str) -> set[object]:
        a = auth_cloud.call("GET", path, None, t)
        assert a.status == 200, a.body
        return {v["name"] for v in a.body}

    assert names(f"/api/v1/fleets/{region['id']}/vehicles") == {van["name"], car["name"]}
    assert names(f"/api/v1/fleets/{region['id']}/vehicles?nested=false") == {car["name"]}
    got = auth_cloud.call("GET", f"/api/v1/fleets/{region['id']}", None, t).body
    assert got == {**region, "vehicles": 1}
    # a fleet cannot move under its own sub-fleet
    loop = auth_cloud.call("PATCH", f"/api/v1/fleets/{region['id']}", {"parent_id": depot["id"]}, t)
    assert loop.status == 422 and loop.body["error"]["field"] == "parent_id"
    # a fleet with vehicles or sub-fleets is not deleted from under them
    busy = auth_cloud.call("DELETE", f"/api/v1/fleets/{region['id']}", None, t)
    assert busy.status == 409 and busy.error_code() == "in_use"
    # move the van to the top fleet, the depot to the top level, then the depot can go
    moved = auth_cloud.call("PATCH", f"/api/v1/vehicles/{van['id']}", {"fleet_id": None}, t)
    assert (
        moved.status == 200 and moved.body["fleet_id"] is None and moved.body["plate"] == "B-FL 1"
    )
    top = auth_cloud.call("PATCH", f"/api/v1/fleets/{depot['id']}", {"parent_id": None}, t)
    assert top.status == 200 and top.body["parent_id"] is None
    assert auth_cloud.call("DELETE", f"/api/v1/fleets/{depot['id']}", None, t).status == 204
    # another tenant's fleet is not a fleet you can put a vehicle in
    b_fleet = auth_cloud.call("POST", "/api/v1/fleets", {"name": _uniq("B")}, auth_cloud.token_b())
    wrong = auth_cloud.call("PATCH", f"/api/v1/vehicles/{car['id']}",
                            {"fleet_id": b_fleet.body["id"]}, t)  # fmt: skip
    assert wrong.status == 422 and wrong.body["error"]["field"] == "fleet_id"


def test_vehicles_create_read_change_delete(auth_cloud: AuthCloud) -> None:
    t = auth_cloud.token("owner")
    name = _uniq("truck")
    made = auth_cloud.call("POST", "/api/v1/vehicles", {"name": name}, t)
    assert made.status == 201, made.body
    vid = made.body["id"]
    assert auth_cloud.call("POST", "/api/v1/vehicles", {"name": name}, t).status == 409
    viewer = auth_cloud.token("viewer")
    assert auth_cloud.call("GET", f"/api/v1/vehicles/{vid}", None, viewer).body["name"] == name
    assert auth_cloud.call("PATCH", f"/api/v1/vehicles/{vid}", {"plate": "X"}, viewer).status == 403
    renamed = auth_cloud.call("PATCH", f"/api/v1/vehicles/{vid}", {"name": name + "-2"}, t)
    assert renamed.status == 200 and renamed.body["name"] == name + "-2"
    null_name = auth_cloud.call("PATCH", f"/api/v1/vehicles/{vid}", {"name": None}, t)
    assert null_name.status == 422 and null_name.body["error"]["field"] == "name"
    assert vid in [v["id"] for v in auth_cloud.call("GET", "/api/v1/vehicles", None, t).body]
    assert auth_cloud.call("DELETE", f"/api/v1/vehicles/{vid}", None, t).status == 204
    assert auth_cloud.call("GET", f"/api/v1/vehicles/{vid}", None, t).status == 404
    assert vid not in [v["id"] for v in auth_cloud.call("GET", "/api/v1/vehicles", None, t).body]


def test_devices_show_their_vehicle_and_last_status(auth_cloud: AuthCloud) -> None:
    device = _uniq("dev")
    vid = auth_cloud.stack.register_vehicle(_uniq("Dev van"), device)
    installer = auth_cloud.token("installer")  # fitting a unit: the installer's read
    one = auth_cloud.call("GET", f"/api/v1/devices/{device}", None, installer)
    assert one.status == 200, one.body
    assert one.body["vehicle_id"] == vid and one.body["enabled"] is True
    assert one.body["online"] is None and one.body["status"] is None  # never reported
    listed = auth_cloud.call("GET", f"/api/v1/devices?vehicle_id={vid}", None, installer).body
    assert [d["device_id"] for d in listed] == [device]
    assert auth_cloud.call("GET", "/api/v1/devices/no-such-device", None, installer).status == 404
