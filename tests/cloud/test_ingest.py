"""Ingest against a real broker and database: idempotency, acks after commit, dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import orjson
import paho.mqtt.client as mqtt
import pytest

from fleet_wire import (
    Ack,
    Down,
    Up,
    decode_model,
    down_topic,
    encode_json,
    telemetry_body,
    up_topic,
)
from tests.harness import CloudStack, db_fetch, mqtt_publish, wait_until

T0 = int(time.time() * 1000) - 60_000


def fixes(first: int, n: int) -> list[dict[str, object]]:
    return [
        {"seq": s, "t": T0 + s * 1000, "lat": 52.5 + s * 1e-4, "lon": 13.4, "spd": 36.0}
        for s in range(first, first + n)
    ]


class AckListener:
    """Subscribes to a device's down/ack like the agent does."""

    def __init__(self, cloud: CloudStack, device_id: str) -> None:
        self.acks: list[Ack] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a, **k: self._subscribed.set()
        self.client.username_pw_set(*cloud.broker.observer)
        self.client.connect(cloud.broker.host, cloud.broker.port)
        self.client.subscribe(down_topic(device_id, Down.ACK), qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.acks.append(decode_model(msg.payload, Ack))

    def acked(self, boot: int) -> set[int]:
        with self._lock:
            return {
                s
                for a in self.acks
                if a.boot == boot
                for lo, hi in a.seqs
                for s in range(lo, hi + 1)
            }

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def acks(cloud: CloudStack, request: pytest.FixtureRequest) -> Iterator[AckListener]:
    device_id = request.node.name.replace("_", "-").lower()[:40].strip("-")
    cloud.register_vehicle(f"Vehicle {device_id}", device_id)
    listener = AckListener(cloud, device_id)
    listener.device_id = device_id  # type: ignore[attr-defined]
    yield listener
    listener.close()


def dead_letters(cloud: CloudStack, device_id: str) -> list[dict[str, object]]:
    return db_fetch(
        cloud.dsn,
        "SELECT reason, detail, payload FROM dead_letters WHERE device_id = $1 ORDER BY id",
        device_id,
    )


def test_same_batch_twice_is_stored_once_and_acked(cloud: CloudStack, acks: AckListener) -> None:
    dev = acks.device_id  # type: ignore[attr-defined]
    batch = fixes(1, 5)
    cloud.publish_fixes(dev, batch, boot=7)
    cloud.publish_fixes(dev, batch, boot=7)  # a retransmission after a lost ack
    wait_until(lambda: acks.acked(7) == {1, 2, 3, 4, 5}, 10, "acks for seqs 1..5")
    assert cloud.stored_seqs(dev, 7) == [1, 2, 3, 4, 5]
    # the same seqs under another boot are other fixes
    cloud.publish_fixes(dev, fixes(1, 2), boot=8)
    assert cloud.stored_seqs(dev) == [1, 1, 2, 2, 3, 4, 5]


def test_malformed_payload_is_dead_lettered_and_stream_goes_on(
    cloud: CloudStack, acks: AckListener
) -> None:
    dev = acks.device_id  # type: ignore[attr-defined]
    topic = up_topic(dev, Up.TELEMETRY)
    mqtt_publish(cloud.broker, topic, b"\x00\xffnot json at all")
    mqtt_publish(cloud.broker, topic, b'{"v":9,"boot":1,"fixes":[]}')
    cloud.publish_fixes(dev, fixes(1, 3), boot=1)
    assert cloud.stored_seqs(dev) == [1, 2, 3]
    wait_until(lambda: len(dead_letters(cloud, dev)) == 2, 10, "two dead letters")
    reasons = [d["reason"] for d in dead_letters(cloud, dev)]
    assert reasons == ["not_json", "unsupported_version"]
    assert dead_letters(cloud, dev)[0]["payload"] == b"\x00\xffnot json at all"


def test_partly_invalid_batch_stores_the_valid_fixes_and_acks_all(
    cloud: CloudStack, acks: AckListener
) -> None:
    dev = acks.device_id  # type: ignore[attr-defined]
    good = fixes(1, 3)
    bad = {**good[1], "seq": 4, "lat": 500.0}
    body = telemetry_body(3, [encode_json(f) for f in [*good, bad]])
    mqtt_publish(cloud.broker, up_topic(dev, Up.TELEMETRY), body)
    wait_until(lambda: acks.acked(3) == {1, 2, 3, 4}, 10, "ack covering the bad fix too")
    assert cloud.stored_seqs(dev, 3) == [1, 2, 3]
    (dl,) = dead_letters(cloud, dev)
    assert dl["reason"] == "schema" and "lat" in str(dl["detail"])
    assert orjson.loads(dl["payload"])["seq"] == 4  # type: ignore[arg-type]


def test_unknown_device_is_dead_lettered_not_stored(cloud: CloudStack) -> None:
    body = telemetry_body(1, [encode_json(f) for f in fixes(1, 1)])
    mqtt_publish(cloud.broker, up_topic("nobody-knows-me", Up.TELEMETRY), body)
    wait_until(lambda: len(dead_letters(cloud, "nobody-knows-me")) == 1, 10, "dead letter")
    assert dead_letters(cloud, "nobody-knows-me")[0]["reason"] == "unknown_device"
    assert cloud.stored_seqs("nobody-knows-me") == []


def test_status_and_last_will_update_device_status(cloud: CloudStack, acks: AckListener) -> None:
    dev = acks.device_id  # type: ignore[attr-defined]
    topic = up_topic(dev, Up.STATUS)
    mqtt_publish(cloud.broker, topic, b'{"v":1,"online":true,"agent":"0.1.0"}')

    def online() -> object:
        rows = db_fetch(cloud.dsn, "SELECT online FROM device_status WHERE device_id = $1", dev)
        return rows[0]["online"] if rows else None

    wait_until(lambda: online() is True, 10, "online status")
    mqtt_publish(cloud.broker, topic, b'{"v":1,"online":false}')
    wait_until(lambda: online() is False, 10, "offline status (the Last Will payload)")


def test_wholly_rejected_batch_is_acked_when_it_names_its_fixes(
    cloud: CloudStack, acks: AckListener
) -> None:
    """A batch the cloud can never store as sent must not be resent forever."""
    dev = acks.device_id  # type: ignore[attr-defined]
    doc = {"v": 2, "boot": 4, "fixes": [{"seq": 1, "t": T0}, {"seq": 2, "t": T0}]}
    raw = orjson.dumps(doc)
    mqtt_publish(cloud.broker, up_topic(dev, Up.TELEMETRY), raw)
    wait_until(lambda: acks.acked(4) == {1, 2}, 10, "ack of the dead-lettered batch")
    (dl,) = dead_letters(cloud, dev)
    assert dl["reason"] == "unsupported_version" and dl["payload"] == raw  # kept whole for replay
    assert cloud.stored_seqs(dev) == []
