"""Who may log in, under which client id, and whose data a message counts as.

No anonymous login on any listener; a device's account works only under client id =
its device id (so ``#``, ``+``, ``a/b`` or another device's id are refused); a
username that could be a wildcard or a path can never become an account; identity
comes from the topic the broker let the device publish on, never from the payload.
"""

from __future__ import annotations

import time
import uuid

import pytest

from fleet_cloud.broker_acl import BadDeviceId, device_role
from fleet_wire import encode_json, telemetry_body, up_topic
from fleet_wire.topics import Up
from tests.harness import Broker, CloudStack, db_fetch, mqtt_publish, wait_until
from tests.security.mqtt_probe import NOT_AUTHORIZED, accepted, connect


def now_ms() -> int:
    return int(time.time() * 1000)


def dev() -> str:
    return f"id-{uuid.uuid4().hex[:10]}"


def test_anonymous_is_refused_on_the_plain_and_the_tls_listener(sec_broker: Broker) -> None:
    b = sec_broker
    assert connect(b.host, b.port, None, None).connack == NOT_AUTHORIZED
    tls = connect(b.host, b.tls_port, None, None, ca_file=b.ca_file)
    assert tls.connack == NOT_AUTHORIZED


@pytest.mark.parametrize("listener", ["plain", "tls"])
def test_wrong_password_and_unknown_user_are_refused(sec_broker: Broker, listener: str) -> None:
    b = sec_broker
    port, ca = (b.port, None) if listener == "plain" else (b.tls_port, b.ca_file)
    d = dev()
    b.device_password(d)
    assert connect(b.host, port, d, "wrong", d, ca_file=ca).connack == NOT_AUTHORIZED
    assert connect(b.host, port, "nobody-here", "x", ca_file=ca).connack == NOT_AUTHORIZED
    good = connect(b.host, port, d, b.device_password(d), d, ca_file=ca)
    assert good.ok
    good.close()


@pytest.mark.parametrize("client_id", ["#", "+", "a/b", "fleet/v1/#", "", "other-device-1"])
def test_a_device_account_works_only_under_its_own_client_id(
    sec_broker: Broker, client_id: str
) -> None:
    b = sec_broker
    d = dev()
    assert connect(b.host, b.port, d, b.device_password(d), client_id).connack == NOT_AUTHORIZED


def test_an_id_with_wildcards_or_slashes_cannot_become_an_account(sec_broker: Broker) -> None:
    for bad in ("#", "+", "a/b", "van+1", "van#1", "$sys", "Van-1"):
        with pytest.raises(BadDeviceId, match="invalid device id"):
            device_role(bad)
        assert connect(sec_broker.host, sec_broker.port, bad, "x").connack == NOT_AUTHORIZED


def test_a_second_login_of_a_device_takes_over_its_session(sec_broker: Broker) -> None:
    """One live connection per device: the client id is fixed, so a clone kicks the original."""
    b = sec_broker
    d = dev()
    first = connect(b.host, b.port, d, b.device_password(d), d)
    second = connect(b.host, b.port, d, b.device_password(d), d)
    try:
        assert first.ok and second.ok
        assert first.wait_disconnected() != 0
    finally:
        first.close()
        second.close()


def test_a_payload_claiming_another_device_is_stored_as_the_publisher(
    sec_cloud: CloudStack,
) -> None:
    a, b = dev(), dev()
    sec_cloud.register_vehicle(f"Claimer {a}", a)
    sec_cloud.register_vehicle(f"Victim {b}", b)
    fix = {"seq": 1, "t": now_ms(), "lat": 52.5, "lon": 13.4, "device_id": b}
    body = telemetry_body(1, [encode_json(fix)])
    # A body whose JSON names device b, published by device a on a's own topic.
    assert b'"device_id"' in body
    mqtt_publish(sec_cloud.broker, up_topic(a, Up.TELEMETRY), body)
    wait_until(
        lambda: bool(
            db_fetch(sec_cloud.dsn, "SELECT 1 FROM positions WHERE device_id = $1", a)
            or db_fetch(sec_cloud.dsn, "SELECT 1 FROM dead_letters WHERE device_id = $1", a)
        ),
        20,
        "device a's message to be stored or dead-lettered",
        every=0.1,
    )
    assert db_fetch(sec_cloud.dsn, "SELECT 1 FROM positions WHERE device_id = $1", b) == []


def test_a_device_publishing_on_another_devices_topic_stores_nothing(
    sec_cloud: CloudStack,
) -> None:
    a, b = dev(), dev()
    sec_cloud.register_vehicle(f"Intruder {a}", a)
    sec_cloud.register_vehicle(f"Target {b}", b)
    broker = sec_cloud.broker
    s = connect(broker.host, broker.port, a, broker.device_password(a), a)
    try:
        forged = telemetry_body(1, [encode_json({"seq": 1, "t": now_ms(), "lat": 1.0, "lon": 2.0})])
        assert s.publish(up_topic(b, Up.TELEMETRY), forged) == NOT_AUTHORIZED
        # The same client's own fix goes through; once it is stored, the forged
        # one (published before it) would have been too.
        own = telemetry_body(1, [encode_json({"seq": 7, "t": now_ms(), "lat": 1.0, "lon": 2.0})])
        assert accepted(s.publish(up_topic(a, Up.TELEMETRY), own))
    finally:
        s.close()
    wait_until(lambda: sec_cloud.stored_seqs(a) == [7], 20, "device a's own fix", every=0.1)
    assert sec_cloud.stored_seqs(b) == []
