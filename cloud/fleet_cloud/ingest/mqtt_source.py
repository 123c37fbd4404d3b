"""MQTT intake for ingest: paho's network loop in a thread, messages handed to asyncio in batches.

Why not aiomqtt here (the agent and the simulator use it): aiomqtt drives
paho's socket from the event loop one packet per readable event, which capped
a QoS 1 consumer at about 3k messages/s on the development machine, while
paho's own network thread receives and PUBACKs 15-20k/s on one core. The
ingest is the one place where that matters.

Backpressure is real: when ``max_buffer`` messages wait for the event loop
(the database is slow or down), the network thread stops reading the socket,
TCP pushes back, and the broker queues for our persistent session up to its
own limits. A QoS 1 message the broker then drops was never acked end to end,
so the device still has it and sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    content_type: str | None


class MqttSource:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        subscription: str,
        *,
        username: str | None = None,
        password: str | None = None,
        max_buffer: int = 20_000,
        session_expiry_s: int = 120,
        receive_maximum: int = 1000,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.subscription = subscription
        self.max_buffer = max_buffer
        self.connected = False
        self.reconnects = 0
        self._buf: deque[Incoming] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._connected_once = False

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.max_queued_messages_set(100_000)  # acks waiting for the socket, bounded
        self._client = c
        props = Properties(PacketTypes.CONNECT)
        # Keep queued device traffic across a quick restart (or crash); see
        # Settings.ingest_session_expiry_s for why this stays short.
        props.SessionExpiryInterval = session_expiry_s
        # How many unacknowledged QoS 1 messages the broker may have in flight
        # to us: a larger window keeps the pipe full at high rates.
        props.ReceiveMaximum = receive_maximum
        self._connect_props = props

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(
            self.host, self.port, keepalive=60, clean_start=False, properties=self._connect_props
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Leave for good: the session ends now, so the broker stops queueing our share."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()

    def pause(self) -> None:
        """Stop taking new messages (shutdown drain): the network thread blocks."""
        with self._cond:
            self.max_buffer = 0

    # -- network thread -----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None = None,
    ) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused the connection: %s", self.client_id, reason)
            return
        self.connected = True
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        client.subscribe(self.subscription, qos=1)
        log.info("%s: connected, subscribed to %s", self.client_id, self.subscription)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None = None,
    ) -> None:
        self.connected = False
        if not self._stopping:
            log.warning("%s: broker connection lost (%s); reconnecting", self.client_id, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        ct = getattr(props, "ContentType", None) if props is not None else None
        item = Incoming(msg.topic, bytes(msg.payload), ct if isinstance(ct, str) else None)
        with self._cond:
            # Backpressure: block this thread (so the socket is not read) while
            # the event loop has a full buffer to work through.
            while len(self._buf) >= self.max_buffer and not self._stopping:
                self._cond.wait(0.5)
            if self._stopping:
                return
            self._buf.append(item)
            first = len(self._buf) == 1
        if first and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- event loop side ----------------------------------------------------

    async def batches(self, max_items: int = 1000) -> AsyncIterator[list[Incoming]]:
        """Yield what has arrived, at most max_items at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._cond:
                n = min(len(self._buf), max_items)
                items = [self._buf.popleft() for _ in range(n)]
                more = bool(self._buf)
                self._cond.notify_all()
            if more:
                self._wake.set()
            if items:
                yield items

    def publish(self, topic: str, payload: bytes, content_type: str) -> bool:
        """Queue a QoS 1 publish (thread-safe); False when it cannot be queued now."""
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        info = self._client.publish(topic, payload, qos=1, properties=props)
        return info.rc == mqtt.MQTT_ERR_SUCCESS
