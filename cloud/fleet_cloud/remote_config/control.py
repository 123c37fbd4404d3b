"""The cloud's MQTT connection for down/config and down/cmd (the fleet-control account).

aiomqtt rather than ingest's hand-rolled subscriber: this client publishes a
few messages a minute, so convenience beats throughput, and aiomqtt gives
MQTT v5 properties (Message Expiry Interval, Content Type) and awaits each
PUBACK. A publish while disconnected returns False: the caller keeps the
message as not yet published and the service loop retries it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_cloud.settings import Settings
from fleet_wire import CT_JSON

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0


class ControlClient:
    def __init__(self, settings: Settings) -> None:
        self.host, self.port = settings.mqtt_host, settings.mqtt_port
        # The fleet-control account: publish-only on down/config and down/cmd (broker ACL).
        self.username: str | None = settings.mqtt_control_username
        self.password: str | None = settings.mqtt_control_password
        # Unique per process: several API nodes publish side by side.
        self.client_id = f"fleet-control-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Stay connected until cancelled (reconnecting with backoff)."""
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    keepalive=30,
                ) as client:
                    self._client = client
                    self.connected.set()
                    delay = 0.5
                    log.info("%s: connected to %s:%d", self.client_id, self.host, self.port)
                    # No subscriptions: the iterator only ends (raising) when the link drops.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as e:
                log.warning("%s: broker connection lost or refused (%s)", self.client_id, e)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None
    ) -> bool:
        """QoS 1 publish, True once the broker acknowledged it."""
        client = self._client
        if client is None:
            return False
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = CT_JSON
        if expiry_s is not None:
            # The broker drops the command once it is stale, so a device that
            # comes back late never sees an order meant for an earlier moment.
            props.MessageExpiryInterval = max(1, expiry_s)
        try:
            await client.publish(
                topic, payload, qos=1, retain=retain, properties=props, timeout=PUBLISH_TIMEOUT_S
            )
        except (aiomqtt.MqttError, TimeoutError) as e:
            log.warning("%s: publish to %s failed (%s)", self.client_id, topic, e)
            return False
        return True
