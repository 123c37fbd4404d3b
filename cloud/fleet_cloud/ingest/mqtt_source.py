"""MQTT intake for ingest: a small asyncio MQTT v5 subscriber built for throughput.

Why not a general client here (the agent and the simulator use aiomqtt):
measured on the development machine, aiomqtt capped a QoS 1 consumer near 3k
messages/s (it drives paho one packet per readable event), and paho's own
network thread near 10k/s (several syscalls and a socketpair wake-up per
message). This protocol parses every packet in each chunk the socket delivers
and answers all its PUBACKs with one write. It speaks only what ingest needs
(ingest/mqtt_wire.py).

Backpressure is real: when ``max_buffer`` messages wait for the event loop
(the database is slow or down), reading pauses, the broker's in-flight window
to us fills (Receive Maximum) and it queues for our session up to its own
limits. A QoS 1 message the broker then drops was never acked end to end, so
the device still has it and sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from fleet_cloud.ingest import mqtt_wire as w

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 60


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    content_type: str | None


class _Connection(asyncio.Protocol):
    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_rx = time.monotonic()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (uvicorn's loop) are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.buf += data
        try:
            self._parse()
        except (w.ProtocolError, ValueError, IndexError) as e:
            log.warning(
                "%s: unreadable data from the broker (%s); reconnecting", self.source.client_id, e
            )
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        # Parse from an immutable copy (one memcpy per chunk): views into the
        # bytearray would stop it from being trimmed afterwards.
        buf = bytes(self.buf)
        view = memoryview(buf)
        pos, acks, got = 0, [], 0
        try:
            while len(buf) - pos >= 2:
                r = w.read_varint(buf, pos + 1)
                if r is None:
                    break
                length, start = r
                end = start + length
                if end > len(buf):
                    break
                kind, flags = buf[pos] >> 4, buf[pos] & 0x0F
                body = view[start:end]
                if kind == w.PUBLISH:
                    p = w.parse_publish(flags, body)
                    self.source._take(Incoming(p.topic, p.payload, p.content_type))
                    got += 1
                    if p.qos == 1 and p.packet_id is not None:
                        acks.append(w.puback(p.packet_id))
                elif kind == w.CONNACK:
                    if not self.connack.done():
                        self.connack.set_result(body[1] if len(body) > 1 else 255)
                elif kind == w.SUBACK:
                    if not self.suback.done():
                        self.suback.set_result(bytes(body[2:]))
                elif kind == w.DISCONNECT:
                    reason = body[0] if len(body) else 0
                    raise w.ProtocolError(f"broker disconnected us (reason 0x{reason:02x})")
                elif kind not in (w.PUBACK, w.PINGRESP):
                    raise w.ProtocolError(f"unexpected packet type {kind}")
                pos = end
        finally:
            del self.buf[:pos]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))  # every PUBACK of the chunk in one write
        if got:
            self.source._arrived(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


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
        self.username, self.password = username, password
        self.max_buffer = max_buffer
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.connected = False
        self.reconnects = 0
        self._buf: deque[Incoming] = deque()
        self._wake = asyncio.Event()
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_id = 0

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.client_id}-mqtt")

    def stop(self) -> None:
        """Leave for good: the session ends now, so the broker stops queueing our share."""
        conn = self._conn
        if conn is not None and conn.transport is not None and self.connected:
            conn.transport.write(w.disconnect(session_expiry=0))
            conn.transport.close()
        self.connected = False
        if self._task is not None:
            self._task.cancel()

    def pause(self) -> None:
        """Stop taking new messages (shutdown drain)."""
        self.max_buffer = 0
        if self._conn is not None:
            self._pause_reading(self._conn)

    async def _run(self) -> None:
        delay = 0.5
        connected_once = False
        while True:
            began = time.monotonic()
            try:
                await self._session()
            except (OSError, TimeoutError, w.ProtocolError) as e:
                log.warning("%s: broker connection %s (%s); reconnecting",
                            self.client_id, "lost" if self.connected else "failed", e)  # fmt: skip
            finally:
                if self.connected:
                    connected_once = True
                self.connected = False
                if self._conn is not None and self._conn.transport is not None:
                    self._conn.transport.close()
                self._conn = None
            if time.monotonic() - began > 30:
                delay = 0.5
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 10.0)
            if connected_once:
                self.reconnects += 1

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(self), self.host, self.port),
            CONNECT_TIMEOUT_S,
        )
        self._conn = conn
        assert conn.transport is not None
        conn.transport.write(
            w.connect(self.client_id, KEEPALIVE_S, False, self.session_expiry_s,
                      self.receive_maximum, self.username, self.password)
        )  # fmt: skip
        reason = await asyncio.wait_for(asyncio.shield(conn.connack), CONNECT_TIMEOUT_S)
        if reason != 0:
            raise w.ProtocolError(f"broker refused the connection (reason 0x{reason:02x})")
        conn.transport.write(w.subscribe(self._packet_id(), self.subscription, 1))
        granted = await asyncio.wait_for(asyncio.shield(conn.suback), CONNECT_TIMEOUT_S)
        if not granted or granted[0] >= 0x80:
            raise w.ProtocolError(f"subscription refused (reason {granted.hex()})")
        self.connected = True
        log.info("%s: connected, subscribed to %s", self.client_id, self.subscription)
        while not conn.lost.done():
            # Keepalive: ping at half the interval; a silent broker is a dead one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.lost), KEEPALIVE_S / 2)
            if conn.lost.done():
                break
            if time.monotonic() - conn.last_rx > KEEPALIVE_S * 1.5:
                raise w.ProtocolError("no answer from the broker within the keepalive")
            conn.transport.write(w.PINGREQ_PACKET)
        raise OSError("connection closed")

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    # -- intake -------------------------------------------------------------

    def _take(self, item: Incoming) -> None:
        self._buf.append(item)

    def _arrived(self, conn: _Connection) -> None:
        self._wake.set()
        if len(self._buf) >= self.max_buffer:
            self._pause_reading(conn)

    def _pause_reading(self, conn: _Connection) -> None:
        if not conn.paused and conn.transport is not None:
            conn.paused = True
            conn.transport.pause_reading()

    async def batches(self, max_items: int = 1000) -> AsyncIterator[list[Incoming]]:
        """Yield what has arrived, at most max_items at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            n = min(len(self._buf), max_items)
            items = [self._buf.popleft() for _ in range(n)]
            if self._buf:
                self._wake.set()
            conn = self._conn
            if (
                conn is not None
                and conn.paused
                and conn.transport is not None
                and len(self._buf) < self.max_buffer // 2
            ):
                conn.paused = False
                conn.transport.resume_reading()
            if items:
                yield items

    def publish(self, topic: str, payload: bytes, content_type: str) -> bool:
        """Send a QoS 1 publish; False when not connected (the device will resend)."""
        conn = self._conn
        if not self.connected or conn is None or conn.transport is None:
            return False
        conn.transport.write(w.publish(topic, payload, self._packet_id(), content_type))
        return True
