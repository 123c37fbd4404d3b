"""Revocation through the API: POST /devices/{id}/disable kicks the connected device at
once, refuses its reconnects, clears its retained messages and makes the cloud drop
its data; /enable lets it back in. Owners and managers only, own tenant only."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.error
import uuid

import asyncpg
import pytest

from fleet_cloud import directory
from fleet_wire.topics import Down, Up, down_topic, up_topic
from tests.harness import CloudStack, db_fetch, http_json, tool, wait_until
from tests.security.mqtt_probe import ADMINISTRATIVE_ACTION, NOT_AUTHORIZED, accepted, connect


def dev() -> str:
    return f"rev-{uuid.uuid4().hex[:10]}"


def post(cloud: CloudStack, path: str, token: str | None = None) -> dict[str, object]:
    doc = http_json(cloud.base_url + "/api/v1" + path, {}, token or cloud.token())
    assert isinstance(doc, dict)
    return doc


def http_status(cloud: CloudStack, path: str, token: str) -> int:
    try:
        http_json(cloud.base_url + "/api/v1" + path, {}, token)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def retained_on(cloud: CloudStack, topics: list[str]) -> dict[str, bytes]:
    """The retained messages on these topics, as a new subscriber gets them.

    One SUBSCRIBE with a marker topic last: the broker sends retained messages in
    the order of the filters, so once the marker's has arrived, every other one has.
    """
    b = cloud.broker
    marker = f"fleet/v1/{dev()}/down/config"
    observer = connect(b.host, b.port, *b.observer)
    try:
        assert accepted(observer.publish(marker, b"marker", retain=True))
        rc, mid = observer.client.subscribe([(t, 1) for t in [*topics, marker]])
        assert rc == 0 and mid is not None
        observer.wait_for(b"marker", "the marker's retained message")
        return {r.topic: r.payload for r in observer.received if r.retain and r.topic in topics}
    finally:
        observer.close()


def test_disable_kicks_refuses_and_clears_then_enable_lets_back_in(sec_cloud: CloudStack) -> None:
    b = sec_cloud.broker
    d = dev()
    sec_cloud.register_vehicle(f"Revoked {d}", d)
    password = b.device_password(d)
    retained = [up_topic(d, Up.STATUS), down_topic(d, Down.CONFIG), down_topic(d, Down.CMD)]

    device = connect(b.host, b.port, d, password, d)
    control = connect(b.host, b.port, b.CONTROL_USER, b.secret(b.CONTROL_USER))
    try:
        assert device.ok and control.ok
        assert accepted(device.publish(retained[0], b'{"v":1,"online":true}', retain=True))
        assert accepted(control.publish(retained[1], b'{"v":1,"version":3}', retain=True))
        assert accepted(control.publish(retained[2], b'{"v":1,"id":"c1"}', retain=True))
        assert set(retained_on(sec_cloud, retained)) == set(retained)

        out = post(sec_cloud, f"/devices/{d}/disable")
        assert out == {"device_id": d, "enabled": False, "broker_account": True}
        assert device.wait_disconnected() == ADMINISTRATIVE_ACTION
    finally:
        device.close()
        control.close()

    assert connect(b.host, b.port, d, password, d).connack == NOT_AUTHORIZED
    assert connect(b.host, b.tls_port, d, password, d, ca_file=b.ca_file).connack == NOT_AUTHORIZED
    assert retained_on(sec_cloud, retained) == {}
    assert asyncio.run(_enabled(sec_cloud.dsn, d)) is False

    out = post(sec_cloud, f"/devices/{d}/enable")
    assert out == {"device_id": d, "enabled": True, "broker_account": True}
    back = connect(b.host, b.port, d, password, d)
    assert back.ok
    # Clearing the retained status reached ingest as an empty up/status: MQTT
    # housekeeping, not a dead letter. A malformed status sent after it is
    # the marker that ingest has read that far.
    assert accepted(back.publish(retained[0], b"not json"))
    back.close()
    wait_until(
        lambda: bool(db_fetch(sec_cloud.dsn, "SELECT 1 FROM dead_letters WHERE device_id = $1", d)),
        30,
        "the marker's dead letter",
    )
    reasons = db_fetch(sec_cloud.dsn, "SELECT reason FROM dead_letters WHERE device_id = $1", d)
    assert [r["reason"] for r in reasons] == ["not_json"]


async def _enabled(dsn: str, device_id: str) -> bool | None:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval("SELECT enabled FROM devices WHERE device_id = $1", device_id)
        return None if value is None else bool(value)
    finally:
        await conn.close()


def test_a_disabled_devices_data_is_dropped_by_the_cloud(sec_cloud: CloudStack) -> None:
    """Belt and braces: were it to get a message through, ingest dead-letters it."""
    d = dev()
    sec_cloud.register_vehicle(f"Dropped {d}", d)
    post(sec_cloud, f"/devices/{d}/disable")
    # The observer may publish anywhere under fleet/v1: it stands in for a message
    # that reached the broker before the revocation.
    b = sec_cloud.broker
    observer = connect(b.host, b.port, *b.observer)
    try:
        body = b'{"v":1,"boot":1,"fixes":[{"seq":1,"t":1,"lat":1,"lon":1}]}'
        assert accepted(observer.publish(up_topic(d, Up.TELEMETRY), body))
    finally:
        observer.close()
    wait_until(
        lambda: bool(db_fetch(sec_cloud.dsn, "SELECT 1 FROM dead_letters WHERE device_id = $1"
                                             " AND reason = 'device_disabled'", d)),
        20, "the disabled device's message to be dead-lettered", every=0.1,
    )  # fmt: skip
    assert sec_cloud.stored_seqs(d) == []


def test_a_device_without_a_broker_account_is_disabled_in_the_cloud(
    sec_cloud: CloudStack,
) -> None:
    d = dev()
    sec_cloud.register_vehicle(f"HTTP only {d}", d)
    out = post(sec_cloud, f"/devices/{d}/disable")
    assert out == {"device_id": d, "enabled": False, "broker_account": False}
    out = post(sec_cloud, f"/devices/{d}/enable")
    assert out == {"device_id": d, "enabled": True, "broker_account": False}


def test_other_tenants_devices_are_not_found_and_viewers_may_not(sec_cloud: CloudStack) -> None:
    foreign = dev()

    async def other_tenant() -> None:
        conn = await asyncpg.connect(sec_cloud.dsn)
        try:
            tid = await directory.ensure_tenant(conn, f"other-{uuid.uuid4().hex[:6]}")
            fid = await directory.ensure_fleet(conn, tid, "Theirs")
            await directory.ensure_vehicle_with_device(conn, tid, fid, "Their van", foreign)
        finally:
            await conn.close()

    asyncio.run(other_tenant())
    sec_cloud.broker.device_password(foreign)
    token = sec_cloud.token()
    assert http_status(sec_cloud, f"/devices/{foreign}/disable", token) == 404
    assert http_status(sec_cloud, "/devices/no-such-device/disable", token) == 404
    assert asyncio.run(_enabled(sec_cloud.dsn, foreign)) is True
    b = sec_cloud.broker
    still = connect(b.host, b.port, foreign, b.device_password(foreign), foreign)
    assert still.ok
    still.close()

    viewer, password = f"viewer-{uuid.uuid4().hex[:6]}@test.local", uuid.uuid4().hex
    subprocess.run(
        [tool("fleet-cloud"), "add-user", viewer, "--password", password, "--tenant",
         sec_cloud.tenant, "--role", "viewer", "--dsn", sec_cloud.dsn],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    login = http_json(sec_cloud.base_url + "/api/v1/auth/login",
                      {"email": viewer, "password": password})  # fmt: skip
    assert isinstance(login, dict)
    d = dev()
    sec_cloud.register_vehicle(f"Viewed {d}", d)
    assert http_status(sec_cloud, f"/devices/{d}/disable", str(login["access_token"])) == 403


@pytest.mark.parametrize("path", ["disable", "enable"])
def test_the_routes_are_in_the_openapi_schema(sec_cloud: CloudStack, path: str) -> None:
    doc = http_json(sec_cloud.base_url + "/api/v1/openapi.json")
    assert isinstance(doc, dict)
    assert f"/api/v1/devices/{{device_id}}/{path}" in doc["paths"]
