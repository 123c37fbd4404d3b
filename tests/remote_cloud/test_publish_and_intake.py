"""Desired configs published retained on down/config (signed, one version per
change), device reports stored through the real ingest, and the layer API."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from fleet_wire import Down, down_topic
from fleet_wire.remote import ConfigDocument, verify
from tests.harness import Broker, mqtt_publish
from tests.remote_cloud.conftest import RemoteCloud, wait_for


def _retained(broker: Broker, topic: str) -> list[mqtt.MQTTMessage]:
    """What a fresh subscriber gets on topic at once (the retained message, if any)."""
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    user, password = broker.observer
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"obs-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)  # fmt: skip
    c.username_pw_set(user, password)
    c.on_message = lambda _c, _u, m: (got.append(m), done.set())
    c.on_subscribe = lambda *_a: threading.Timer(3.0, done.set).start()
    c.connect(broker.host, broker.port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()
    return got


def test_layer_change_publishes_signed_retained_configs(
    remote_cloud: RemoteCloud, broker: Broker
) -> None:
    fid, (dev,) = remote_cloud.fleet_with_devices(1)
    put = remote_cloud.call("PUT", f"/api/v1/config/fleets/{fid}",
                            {"config": {"sampler.min_interval_s": "4"}})  # fmt: skip
    assert put.status == 200, put.body
    assert put.body["config"] == {"sampler.min_interval_s": 4.0}  # normalised
    assert put.body["devices_updated"] == 1

    def published(version: int) -> bool:
        c = remote_cloud.call("GET", f"/api/v1/devices/{dev}/config").body
        return c["desired"] is not None and c["desired"]["version"] == version \
            and c["desired"]["published"]  # fmt: skip

    wait_for(lambda: published(1), "version 1 published")
    (msg,) = _retained(broker, down_topic(dev, Down.CONFIG))
    assert msg.retain
    doc = ConfigDocument.model_validate_json(msg.payload)
    assert (doc.device_id, doc.version, doc.config) == (dev, 1, {"sampler.min_interval_s": 4.0})
    assert verify(remote_cloud.public_key, doc)

    # The same document again issues nothing; a device-layer change issues version 2.
    again = remote_cloud.call("PUT", f"/api/v1/config/fleets/{fid}",
                              {"config": {"sampler.min_interval_s": 4}})  # fmt: skip
    assert again.body["devices_updated"] == 0 and again.body["version"] == 2
    dput = remote_cloud.call("PUT", f"/api/v1/config/devices/{dev}",
                             {"config": {"publisher.drain_rate": 250}})  # fmt: skip
    assert dput.status == 200 and dput.body["devices_updated"] == 1
    wait_for(lambda: published(2), "version 2 published")
    (msg,) = _retained(broker, down_topic(dev, Down.CONFIG))
    doc = ConfigDocument.model_validate_json(msg.payload)
    assert doc.version == 2 and verify(remote_cloud.public_key, doc)
    assert doc.config == {"sampler.min_interval_s": 4.0, "publisher.drain_rate": 250.0}


def test_reports_are_stored_through_ingest(remote_cloud: RemoteCloud, broker: Broker) -> None:
    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    remote_cloud.call("PUT", f"/api/v1/config/devices/{dev}", {"config": {"log_level": "debug"}})
    report = (b'{"v":1,"version":1,"status":"rejected","reason":"no",'
              b'"active_version":0,"t":1700000000000}')  # fmt: skip
    mqtt_publish(broker, f"fleet/v1/{dev}/up/config", report, "application/json")

    def reported() -> dict[str, Any] | None:
        return remote_cloud.call("GET", f"/api/v1/devices/{dev}/config").body["reported"]

    wait_for(lambda: reported() is not None, "the report to be stored")
    rep = reported()
    assert rep is not None
    assert (rep["version"], rep["status"], rep["reason"], rep["active_version"]) == (
        1, "rejected", "no", 0)  # fmt: skip
    assert remote_cloud.call("GET", f"/api/v1/devices/{dev}/config").body["in_sync"] is False

    # A malformed report goes to the dead letters with its reason; nothing else changes.
    mqtt_publish(broker, f"fleet/v1/{dev}/up/config", b'{"v":1,"version":"x"}', "application/json")
    wait_for(
        lambda: remote_cloud.db(
            "SELECT 1 FROM dead_letters WHERE device_id = $1 AND topic LIKE '%/up/config'", dev
        ),
        "the malformed report to be dead-lettered",
    )
    assert reported() == rep


def test_layer_api_refuses_bad_input_and_other_tenants(remote_cloud: RemoteCloud) -> None:
    fid, (dev,) = remote_cloud.fleet_with_devices(1)
    bad = remote_cloud.call("PUT", f"/api/v1/config/fleets/{fid}",
                            {"config": {"broker.password": "x"}})  # fmt: skip
    assert bad.status == 422 and bad.error_code() == "invalid_config"
    assert bad.body["error"]["field"] == "config.broker.password"
    bad = remote_cloud.call("PUT", f"/api/v1/config/devices/{dev}",
                            {"config": {"sampler.min_interval_s": -3}})  # fmt: skip
    assert bad.status == 422 and "sampler.min_interval_s" in bad.body["error"]["message"]
    # A combination the agent would refuse, across layers, names the device.
    remote_cloud.call("PUT", f"/api/v1/config/fleets/{fid}",
                      {"config": {"sampler.min_interval_s": 30}})  # fmt: skip
    bad = remote_cloud.call("PUT", f"/api/v1/config/devices/{dev}",
                            {"config": {"sampler.max_interval_s": 10}})  # fmt: skip
    assert bad.status == 422 and dev in bad.body["error"]["message"], bad.body

    viewer = remote_cloud.user("viewer")
    assert remote_cloud.call("GET", f"/api/v1/config/fleets/{fid}", token=viewer).status == 200
    denied = remote_cloud.call("PUT", f"/api/v1/config/fleets/{fid}", {"config": {}}, viewer)
    assert denied.status == 403 and denied.error_code() == "forbidden"

    stranger = remote_cloud.user("owner", tenant=f"other-{uuid.uuid4().hex[:6]}")
    for method, path, body in [
        ("GET", f"/api/v1/config/fleets/{fid}", None),
        ("PUT", f"/api/v1/config/fleets/{fid}", {"config": {}}),
        ("GET", f"/api/v1/config/devices/{dev}", None),
        ("GET", f"/api/v1/devices/{dev}/config", None),
        ("POST", f"/api/v1/devices/{dev}/commands", {"kind": "locate"}),
    ]:
        ans = remote_cloud.call(method, path, body, stranger)
        assert ans.status == 404 and ans.error_code() == "not_found", (path, ans.body)
    # The stranger's own tenant layer is theirs alone.
    assert remote_cloud.call("GET", "/api/v1/config/tenant", token=stranger).body["config"] == {}


def test_disabled_device_gets_nothing_until_enabled_again(
    remote_cloud: RemoteCloud, broker: Broker
) -> None:
    _fid, (dev,) = remote_cloud.fleet_with_devices(1)
    broker.device_password(dev)  # a broker account, as a provisioned unit has
    assert remote_cloud.call("POST", f"/api/v1/devices/{dev}/disable").status == 200
    put = remote_cloud.call(
        "PUT", f"/api/v1/config/devices/{dev}", {"config": {"log_level": "warning"}}
    )
    assert put.status == 200 and put.body["devices_updated"] == 1
    ans = remote_cloud.call("POST", f"/api/v1/devices/{dev}/commands", {"kind": "locate"})
    assert ans.status == 409 and ans.error_code() == "device_disabled"

    def published() -> bool:
        return bool(
            remote_cloud.call("GET", f"/api/v1/devices/{dev}/config").body["desired"]["published"]
        )

    assert remote_cloud.call("POST", f"/api/v1/devices/{dev}/enable").status == 200
    wait_for(published, "the config to be published after enabling")
    wait_for(lambda: len(_retained(broker, down_topic(dev, Down.CONFIG))) == 1, "the retained copy")
    (msg,) = _retained(broker, down_topic(dev, Down.CONFIG))
    assert ConfigDocument.model_validate_json(msg.payload).config == {"log_level": "warning"}
    # Disabling clears the retained copy; enabling brings the same version back.
    assert remote_cloud.call("POST", f"/api/v1/devices/{dev}/disable").status == 200
    assert _retained(broker, down_topic(dev, Down.CONFIG)) == []
    wait_for(lambda: not published(), "the config to count as not on the broker")
    assert remote_cloud.call("POST", f"/api/v1/devices/{dev}/enable").status == 200
    wait_for(published, "the config to be published again")
    wait_for(lambda: len(_retained(broker, down_topic(dev, Down.CONFIG))) == 1, "the retained copy")
    (msg,) = _retained(broker, down_topic(dev, Down.CONFIG))
    assert ConfigDocument.model_validate_json(msg.payload).version == 1
