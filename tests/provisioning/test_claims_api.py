"""Claim tokens through the API and fleetctl, and their redemption rules, against the
real cloud, database and broker (the broker account is checked by logging in with it)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.harness import CloudStack, tool
from tests.provisioning.conftest import PASSWORD, ProvCloud, call


def install_id() -> str:
    return secrets.token_urlsafe(24)


def redeem(pc: ProvCloud, token: str, install: str) -> tuple[int, dict[str, Any]]:
    a = call(pc.url, "POST", "/api/v1/provision", {"token": token, "install_id": install})
    return a.status, a.body


def broker_accepts(pc: ProvCloud, user: str, password: str) -> bool:
    async def go() -> bool:
        try:
            async with aiomqtt.Client(
                pc.broker.host, pc.broker.port, identifier=user, username=user,
                password=password, protocol=aiomqtt.ProtocolVersion.V5, timeout=10,
            ):  # fmt: skip
                return True
        except aiomqtt.MqttError:
            return False

    return asyncio.run(go())


def test_roles_and_tenancy_of_claims(prov_cloud: ProvCloud) -> None:
    vid = prov_cloud.vehicle("Roles van " + secrets.token_hex(3))
    path = f"/api/v1/vehicles/{vid}/claims"
    for role, want in (("manager", 201), ("owner", 201), ("installer", 201), ("viewer", 403)):
        a = prov_cloud.call("POST", path, {"ttl_s": 600}, role=role)
        assert a.status == want, (role, a.body)
    # another tenant's owner: the vehicle does not exist for them
    for method, body in (("POST", {}), ("GET", None)):
        a = prov_cloud.call(method, path, body, role="owner_b")
        assert a.status == 404 and a.body["error"]["code"] == "not_found", a.body
    claims = prov_cloud.call("GET", path).body
    assert len(claims) == 3 and all(c["status"] == "pending" for c in claims)
    assert all("token" not in c for c in claims)
    assert {c["created_by"] for c in claims} == {
        prov_cloud.users[r] for r in ("manager", "owner", "installer")
    }
    a = prov_cloud.call("DELETE", f"{path}/{claims[0]['id']}", role="owner_b")
    assert a.status == 404
    tenant_wide = prov_cloud.call("GET", "/api/v1/claims?status=pending").body
    assert {c["id"] for c in claims} <= {c["id"] for c in tenant_wide}
    assert prov_cloud.call("GET", "/api/v1/claims", role="owner_b").body == []


def test_ttl_is_bounded_and_the_token_shown_once(prov_cloud: ProvCloud) -> None:
    vid = prov_cloud.vehicle("TTL van " + secrets.token_hex(3))
    for ttl in (10, 8 * 86400):
        a = prov_cloud.call("POST", f"/api/v1/vehicles/{vid}/claims", {"ttl_s": ttl})
        assert a.status == 422 and a.body["error"]["field"] == "ttl_s", a.body
    c = prov_cloud.claim(vid, ttl_s=3600)
    assert c["token"].startswith("fct_") and len(c["token"]) > 40
    stored = prov_cloud.db("SELECT token_sha256 FROM device_claims WHERE id = $1", c["id"])
    assert c["token"].encode() not in bytes(stored[0]["token_sha256"])  # a hash, not the token


def test_redemption_registers_the_device_and_its_broker_account(prov_cloud: ProvCloud) -> None:
    name = "Van 42 (Nord) " + secrets.token_hex(2)
    vid = prov_cloud.vehicle(name)
    c = prov_cloud.claim(vid)
    unit = install_id()
    status, doc = redeem(prov_cloud, c["token"], unit)
    assert status == 200, doc
    device = doc["device_id"]
    assert device.startswith("van-42-nord-"), device  # from the vehicle's name
    assert doc["vehicle_id"] == vid and doc["mqtt"]["username"] == device
    assert doc["mqtt"]["tls_port"] == prov_cloud.broker.tls_port
    assert doc["mqtt"]["ca_pem"] == prov_cloud.broker.ca_file.read_text()
    assert doc["config"]["broker"] == {
        "host": prov_cloud.broker.host, "port": prov_cloud.broker.tls_port, "tls": True,
    }  # fmt: skip
    assert doc["config"]["remote"]["public_key"] == doc["config_public_key"]
    rows = prov_cloud.db(
        "SELECT tenant_id, vehicle_id, enabled FROM devices WHERE device_id = $1", device
    )
    assert [(r["vehicle_id"], r["enabled"]) for r in rows] == [(vid, True)]
    claim = prov_cloud.call("GET", f"/api/v1/vehicles/{vid}/claims").body[0]
    assert claim["status"] == "used" and claim["used_by"] == unit and claim["device_id"] == device
    assert broker_accepts(prov_cloud, device, doc["mqtt"]["password"])
    assert not broker_accepts(prov_cloud, device, "not-" + doc["mqtt"]["password"])

    # The same unit again (the installer re-ran the command): same device, new password,
    # and the old password stops working.
    status, again = redeem(prov_cloud, c["token"], unit)
    assert status == 200, again
    assert again["device_id"] == device and again["mqtt"]["password"] != doc["mqtt"]["password"]
    assert broker_accepts(prov_cloud, device, again["mqtt"]["password"])
    assert not broker_accepts(prov_cloud, device, doc["mqtt"]["password"])

    # Another unit with the same token: refused, naming when it was used.
    status, body = redeem(prov_cloud, c["token"], install_id())
    assert status == 409 and body["error"]["code"] == "claim_used", body
    assert re.search(r"already used on \d{4}-\d\d-\d\d \d\d:\d\d UTC by another unit",
                     body["error"]["message"]), body  # fmt: skip
    assert broker_accepts(prov_cloud, device, again["mqtt"]["password"])  # untouched

    # A new claim for the same vehicle (a replacement unit) takes the device id over.
    status, repl = redeem(prov_cloud, prov_cloud.claim(vid)["token"], install_id())
    assert status == 200 and repl["device_id"] == device, repl
    assert not broker_accepts(prov_cloud, device, again["mqtt"]["password"])


def test_expired_revoked_and_unknown_tokens(prov_cloud: ProvCloud) -> None:
    vid = prov_cloud.vehicle("Refusals van " + secrets.token_hex(3))
    expired = prov_cloud.claim(vid)
    prov_cloud.db(
        """UPDATE device_claims SET created_at = now() - interval '3 hours',
               expires_at = now() - interval '1 hour' WHERE id = $1""",
        expired["id"],
    )
    status, body = redeem(prov_cloud, expired["token"], install_id())
    assert status == 410 and body["error"]["code"] == "claim_expired", body
    assert "expired on" in body["error"]["message"]

    revoked = prov_cloud.claim(vid)
    path = f"/api/v1/vehicles/{vid}/claims/{revoked['id']}"
    assert prov_cloud.call("DELETE", path).status == 204
    assert prov_cloud.call("DELETE", path).status == 204  # idempotent
    status, body = redeem(prov_cloud, revoked["token"], install_id())
    assert status == 410 and body["error"]["code"] == "claim_revoked", body

    status, body = redeem(prov_cloud, "fct_" + secrets.token_urlsafe(32), install_id())
    assert status == 404 and body["error"]["code"] == "unknown_claim", body
    statuses = {c["id"]: c["status"] for c in prov_cloud.call("GET", path.rsplit("/", 1)[0]).body}
    assert statuses == {expired["id"]: "expired", revoked["id"]: "revoked"}
    assert not prov_cloud.db("SELECT 1 FROM devices WHERE vehicle_id = $1", vid)

    used = prov_cloud.claim(vid)
    assert redeem(prov_cloud, used["token"], install_id())[0] == 200
    a = prov_cloud.call("DELETE", f"/api/v1/vehicles/{vid}/claims/{used['id']}")
    assert a.status == 409 and "disable the device" in a.body["error"]["message"], a.body


def test_bad_requests_are_named(prov_cloud: ProvCloud) -> None:
    a = call(prov_cloud.url, "POST", "/api/v1/provision", {"token": "x", "install_id": "short"})
    assert a.status == 422 and a.body["error"]["field"] == "install_id", a.body
    vid = prov_cloud.vehicle("Requested id van " + secrets.token_hex(3))
    other = prov_cloud.vehicle("Other van " + secrets.token_hex(3))
    taken = redeem(prov_cloud, prov_cloud.claim(other)["token"], install_id())[1]["device_id"]
    a = prov_cloud.call("POST", f"/api/v1/vehicles/{vid}/claims", {"device_id": taken})
    assert a.status == 409 and a.body["error"]["field"] == "device_id", a.body
    a = prov_cloud.call("POST", f"/api/v1/vehicles/{vid}/claims", {"device_id": "Bad/Id"})
    assert a.status == 422, a.body
    wanted = "unit-" + secrets.token_hex(4)
    status, doc = redeem(prov_cloud, prov_cloud.claim(vid, device_id=wanted)["token"], install_id())
    assert status == 200 and doc["device_id"] == wanted


def test_unknown_tokens_are_rate_limited_per_address(prov_cloud: ProvCloud, tmp_path: Path) -> None:
    stack = CloudStack(
        prov_cloud.broker, prov_cloud.stack.dsn, tmp_path, tenant=prov_cloud.stack.tenant,
        email=f"rl-{secrets.token_hex(3)}@prov.test", serve_args=["--no-ingest"],
        extra_env={"FLEET_PROVISION_MAX_FAILURES": "3", "FLEET_PROVISION_WINDOW_S": "600"},
    ).start()  # fmt: skip
    try:
        good = prov_cloud.claim(prov_cloud.vehicle("RL van " + secrets.token_hex(3)))["token"]
        for _ in range(3):
            guess = {"token": "fct_guess" + secrets.token_hex(8), "install_id": install_id()}
            a = call(stack.base_url, "POST", "/api/v1/provision", guess)
            assert a.status == 404, a.body
        a = call(stack.base_url, "POST", "/api/v1/provision",
                 {"token": good, "install_id": install_id()})  # fmt: skip
        assert a.status == 429 and a.body["error"]["code"] == "too_many_attempts", a.body
        assert int(a.headers["retry-after"]) > 0
    finally:
        stack.stop()
    # the limit did not consume the good token: it still works (on the other node)
    assert redeem(prov_cloud, good, install_id())[0] == 200


@pytest.fixture
def fleetctl_env(prov_cloud: ProvCloud, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "FLEETCTL_CONFIG": str(tmp_path / "fleetctl.json"), "COLUMNS": "200"}
    out = subprocess.run(
        [tool("fleetctl"), "login", "--api", prov_cloud.url,
         "--email", prov_cloud.users["installer"], "--password", PASSWORD],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + out.stdout
    return env


def fleetctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("fleetctl"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_fleetctl_claim_create_list_revoke(
    prov_cloud: ProvCloud, fleetctl_env: dict[str, str]
) -> None:
    name = "Ctl van " + secrets.token_hex(3)
    vid = prov_cloud.vehicle(name)
    out = fleetctl(fleetctl_env, "claim", "create", "--vehicle", name.upper(), "--ttl", "30m")
    assert out.returncode == 0, out.stdout + out.stderr
    token = re.search(r"^token: (fct_\S+)$", out.stdout, re.M)
    assert token is not None, out.stdout
    assert f"fleet-agent provision --cloud {prov_cloud.url} --token {token.group(1)}" in out.stdout
    (claim,) = prov_cloud.call("GET", f"/api/v1/vehicles/{vid}/claims").body
    assert 29 * 60 < (_ts(claim["expires_at"]) - _ts(claim["created_at"])) <= 30 * 60  # --ttl 30m
    listed = fleetctl(fleetctl_env, "claim", "list", "--vehicle", str(vid))
    assert listed.returncode == 0 and "pending" in listed.stdout, listed.stdout
    assert token.group(1) not in listed.stdout
    out = fleetctl(fleetctl_env, "claim", "revoke", str(claim["id"]), "--vehicle", name)
    assert out.returncode == 0, out.stdout + out.stderr
    listed = fleetctl(fleetctl_env, "claim", "list", "--status", "revoked")
    assert str(claim["id"]) in listed.stdout
    bad = fleetctl(fleetctl_env, "claim", "create", "--vehicle", name, "--ttl", "soon")
    assert bad.returncode == 1 and "--ttl 'soon'" in bad.stdout + bad.stderr
    bad = fleetctl(fleetctl_env, "claim", "create", "--vehicle", "no such van")
    assert bad.returncode == 1 and "no vehicle 'no such van'" in bad.stdout + bad.stderr
    assert redeem(prov_cloud, token.group(1), install_id())[0] == 410


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_a_broker_failure_leaves_the_claim_unused(prov_cloud: ProvCloud, tmp_path: Path) -> None:
    """The broker account is set inside the transaction that marks the claim used: a
    cloud whose admin login the broker refuses answers 503 and consumes nothing."""
    stack = CloudStack(
        prov_cloud.broker, prov_cloud.stack.dsn, tmp_path, tenant=prov_cloud.stack.tenant,
        email=f"nb-{secrets.token_hex(3)}@prov.test", serve_args=["--no-ingest"],
        extra_env={"FLEET_MQTT_ADMIN_PASSWORD": "not-the-admin-password"},
    ).start()  # fmt: skip
    vid = prov_cloud.vehicle("No broker van " + secrets.token_hex(3))
    token = prov_cloud.claim(vid)["token"]
    unit = install_id()
    try:
        a = call(stack.base_url, "POST", "/api/v1/provision", {"token": token, "install_id": unit})
        assert a.status == 503 and a.body["error"]["code"] == "broker_unavailable", a.body
    finally:
        stack.stop()
    (claim,) = prov_cloud.call("GET", f"/api/v1/vehicles/{vid}/claims").body
    assert claim["status"] == "pending" and claim["used_by"] is None
    assert not prov_cloud.db("SELECT 1 FROM devices WHERE vehicle_id = $1", vid)
    # another unit may still take it: nothing was half-done
    assert redeem(prov_cloud, token, install_id())[0] == 200
