"""Deliver outbox rows over MQTT v5 and delete them only on the cloud's end-to-end ack.

Order of sending on a connection:
1. live fixes (committed since the connection came up), newest first, so the
   dashboard sees where the vehicle is now;
2. re-sends of batches whose ack did not come within ack_timeout_s;
3. the backlog, oldest first, in batches of one boot, at most drain_rate fixes/s.
At most max_inflight_batches batches wait for an ack at any time.

Session: client id = username = device_id, clean_start=False with a session
expiry, so the broker keeps our ack subscription and queues the acks the cloud
publishes while we are offline. The Will is the retained ``online: false``
status; a clean stop publishes it explicitly (a clean DISCONNECT suppresses
the Will).

Downlink: with a ``DownlinkHandler`` (fleet_edge.remote), the session also
subscribes to the device's ``down/config`` and ``down/cmd`` and hands those
messages over; ``publish_up`` sends its reports, and ``reconfigure`` takes a
new config live (a new broker address ends the session and reconnects there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_edge.backlog import BacklogRanges
from fleet_edge.config import AgentConfig, BrokerConfig
from fleet_edge.inflight import Batch, InFlight
from fleet_edge.logs import Every
from fleet_edge.outbox import Outbox
from fleet_edge.pacing import Backoff, TokenBucket
from fleet_edge.records import OutboxRow, build_payloads
from fleet_wire import (
    CT_JSON,
    Ack,
    Down,
    Status,
    Up,
    WireError,
    decode_model,
    down_topic,
    encode_json,
    up_topic,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
STATUS_TIMEOUT_S = 5.0
OFFLINE_TIMEOUT_S = 2.0  # part of the 5 s stop budget
# A connection that stayed up this long was a real one: the next loss starts
# the reconnect backoff from its minimum again.
STABLE_CONNECTION_S = 30.0
REPORT_TIMEOUT_S = 10.0


class DownlinkHandler(Protocol):
    """Remote config and commands (fleet_edge.remote.downlink); must not block."""

    def received(self, kind: Down, payload: bytes, content_type: str | None) -> None: ...

    def session_up(self) -> None: ...

    def cloud_ack(self) -> None: ...


@dataclass
class PublisherStats:
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    batches_sent: int = 0
    fixes_sent: int = 0
    resent_batches: int = 0
    acks: int = 0
    acked_rows: int = 0  # rows deleted because of acks
    bad_acks: int = 0
    last_ack_ms: int | None = None


def _same_boot_prefix(rows: list[OutboxRow]) -> list[OutboxRow]:
    """The leading rows that share the first row's boot (a batch holds one boot)."""
    boot = rows[0].boot
    for i, r in enumerate(rows):
        if r.boot != boot:
            return rows[:i]
    return rows


def _props(packet: int, **values: Any) -> Properties:
    p = Properties(packet)
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Publisher:
    def __init__(
        self,
        cfg: AgentConfig,
        outbox: Outbox,
        status_provider: Callable[[], Awaitable[Status]],
        downlink: DownlinkHandler | None = None,
    ) -> None:
        self._cfg = cfg
        self._pub = cfg.publisher
        self._outbox = outbox
        self._status_provider = status_provider
        self._telemetry_topic = up_topic(cfg.device_id, Up.TELEMETRY)
        self._status_topic = up_topic(cfg.device_id, Up.STATUS)
        self._ack_topic = down_topic(cfg.device_id, Down.ACK)
        self._downlink = downlink
        self._down_topics = {down_topic(cfg.device_id, k): k for k in (Down.CONFIG, Down.CMD)}
        self._redirect = asyncio.Event()  # the broker settings changed: reconnect
        self._connecting_to: BrokerConfig = cfg.broker
        self._session_broker: BrokerConfig | None = None
        self._inflight = InFlight(self._pub.ack_timeout_s, self._pub.max_inflight_batches)
        self._bucket = TokenBucket(self._pub.drain_rate, self._pub.backlog_batch, time.monotonic())
        self._backlog = BacklogRanges()
        self._committed_seq = 0  # highest seq the writer has committed
        self._live_cursor = 0  # highest seq sent live (or handed to the backlog)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._bad_ack_warning = Every(60.0)
        self.stats = PublisherStats()

    # --- called by the other tasks -------------------------------------------------

    def notify_committed(self, last_seq: int) -> None:
        """The writer committed rows up to ``last_seq``: they are live now."""
        if last_seq > self._committed_seq:
            self._committed_seq = last_seq
            self._wake.set()

    def stop(self) -> None:
        """Publish the offline status, disconnect cleanly, and make run() return."""
        self._stop.set()

    async def publish_status(self, status: Status) -> None:
        """Retained status; silently skipped while offline (the next connect sends one)."""
        client = self._client
        if client is None:
            return
        try:
            await client.publish(
                self._status_topic,
                encode_json(status),
                qos=1,
                retain=True,
                properties=_props(PacketTypes.PUBLISH, ContentType=CT_JSON),
                timeout=STATUS_TIMEOUT_S,
            )
        except aiomqtt.MqttError as e:
            log.debug("status not published: %s", e)

    async def publish_up(self, kind: Up, payload: bytes) -> bool:
        """QoS 1 publish on one of our up topics; True once the broker PUBACKed it."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(
                up_topic(self._cfg.device_id, kind),
                payload,
                qos=1,
                properties=_props(PacketTypes.PUBLISH, ContentType=CT_JSON),
                timeout=REPORT_TIMEOUT_S,
            )
        except aiomqtt.MqttError as e:
            log.debug("%s not published: %s", kind.value, e)
            return False
        return True

    @property
    def session_broker(self) -> BrokerConfig | None:
        """The broker settings of the connection that is up (None: offline)."""
        return self._session_broker

    def reconfigure(self, cfg: AgentConfig) -> None:
        """Take a new config live: batching, drain rate; new broker settings reconnect."""
        old = self._cfg
        self._cfg, self._pub = cfg, cfg.publisher
        if (old.publisher.drain_rate, old.publisher.backlog_batch) != (
            cfg.publisher.drain_rate,
            cfg.publisher.backlog_batch,
        ):
            self._bucket = TokenBucket(
                cfg.publisher.drain_rate, cfg.publisher.backlog_batch, time.monotonic()
            )
        if cfg.broker != old.broker:
            self._redirect.set()
        self._wake.set()

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.stats.connected,
            "inflight": len(self._inflight),
            "sent": self.stats.fixes_sent,
            "resent": self.stats.resent_batches,
            "bad_acks": self.stats.bad_acks,
        }

    # --- connection -------------------------------------------------------------------

    async def run(self) -> None:
        start_seq = await self._outbox.last_seq()
        # Everything stored before this run is backlog; the live cursor starts above it.
        self._backlog.add(0, start_seq)
        self._live_cursor = start_seq
        self._committed_seq = max(self._committed_seq, start_seq)
        b = self._cfg.broker
        backoff = Backoff(b.reconnect_min_s, b.reconnect_max_s)
        while not self._stop.is_set():
            began = time.monotonic()
            self._redirect.clear()  # the attempt reads the broker settings as they are now
            try:
                await self._attempt()
            except aiomqtt.MqttError as e:
                if not self._stop.is_set():
                    b = self._connecting_to
                    state = "lost" if self.stats.connected else "failed"
                    log.warning("broker %s:%d connection %s: %s", b.host, b.port, state, e)
            finally:
                self._client = None
                self._session_broker = None
                self.stats.connected = False
            if self._stop.is_set():
                break
            if self._redirect.is_set():
                backoff.reset()  # new broker settings: connect with them at once
                continue
            if time.monotonic() - began >= STABLE_CONNECTION_S:
                backoff.reset()
            await _first_of(self._stop, self._redirect, within=backoff.next_delay())

    async def _attempt(self) -> None:
        """One connection; a connect still in progress is abandoned when the broker changes."""
        attempt = asyncio.create_task(self._connect_and_run(), name="mqtt-connection")
        try:
            await _first_of(self._redirect, task=attempt)
            if not attempt.done() and self._client is None:
                attempt.cancel()  # still connecting to the old address
            await asyncio.wait({attempt})
        finally:
            attempt.cancel()
        if not attempt.cancelled():
            attempt.result()  # re-raises MqttError

    async def _connect_and_run(self) -> None:
        async with self._new_client() as client:
            await self._session(client)

    def _new_client(self) -> aiomqtt.Client:
        # A fresh client per connection: retransmission is ours (driven by cloud
        # acks), so paho's own in-flight state must not survive a reconnect.
        b = self._connecting_to = self._cfg.broker
        client = aiomqtt.Client(
            b.host,
            b.port,
            identifier=self._cfg.device_id,
            username=self._cfg.device_id,
            password=b.password,
            tls_params=b.tls_params(),
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=_props(PacketTypes.CONNECT, SessionExpiryInterval=b.session_expiry_s),
            will=aiomqtt.Will(
                self._status_topic,
                encode_json(Status(online=False)),
                qos=1,
                retain=True,
                properties=_props(PacketTypes.WILLMESSAGE, ContentType=CT_JSON),
            ),
            keepalive=b.keepalive_s,
            timeout=CONNECT_TIMEOUT_S,
            logger=logging.getLogger("fleet_edge.mqtt"),
        )
        # Our batches are concurrent publishes by design; don't warn about them.
        client.pending_calls_threshold = 2 * self._pub.max_inflight_batches + 10
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self._ack_topic, qos=1)
        if self._downlink is not None:
            await client.subscribe([(t, 1) for t in self._down_topics])
        self._client = client
        self._session_broker = self._connecting_to
        self.stats.connected = True
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self._connection_up()
        await self.publish_status(await self._status_provider())
        b = self._connecting_to
        log.info("connected to broker %s:%d as %s", b.host, b.port, self._cfg.device_id)
        self._wake.set()
        if self._downlink is not None:
            self._downlink.session_up()
        receive = asyncio.create_task(self._receive(client), name="mqtt-receive")
        send = asyncio.create_task(self._send_loop(client), name="mqtt-send")
        stop = asyncio.create_task(self._stop.wait(), name="mqtt-stop")
        redirect = asyncio.create_task(self._redirect.wait(), name="mqtt-redirect")
        tasks = (receive, send, stop, redirect)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (*tasks, *self._publishing):
                t.cancel()
            await asyncio.gather(*tasks, *self._publishing, return_exceptions=True)
        for t in (receive, send):
            if t in done and not t.cancelled() and (exc := t.exception()) is not None:
                raise exc
        if stop in done or redirect in done:
            await self._publish_offline(client)

    def _connection_up(self) -> None:
        # Fixes committed while offline are backlog now; "live" restarts here.
        if self._committed_seq > self._live_cursor:
            self._backlog.add(self._live_cursor, self._committed_seq)
            self._live_cursor = self._committed_seq
        self._inflight.resend_unconfirmed(time.monotonic())

    async def _publish_offline(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(
                self._status_topic,
                encode_json(Status(online=False)),
                qos=1,
                retain=True,
                properties=_props(PacketTypes.PUBLISH, ContentType=CT_JSON),
                timeout=OFFLINE_TIMEOUT_S,
            )
        except aiomqtt.MqttError as e:
            log.debug("offline status not published: %s", e)

    # --- acks ----------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(self._ack_topic):
                await self._on_ack(message)
            elif self._downlink is not None and message.topic.value in self._down_topics:
                payload = message.payload
                self._downlink.received(
                    self._down_topics[message.topic.value],
                    bytes(payload) if isinstance(payload, bytes | bytearray) else b"",
                    getattr(message.properties, "ContentType", None),
                )

    async def _on_ack(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        content_type = getattr(message.properties, "ContentType", None)
        try:
            if not isinstance(payload, bytes | bytearray):
                raise WireError("empty")
            ack = decode_model(bytes(payload), Ack, content_type)
        except WireError as e:
            self.stats.bad_acks += 1
            if self._bad_ack_warning.due():
                log.warning(
                    "ack refused (%s): %s (%d so far)",
                    e.reason,
                    e.detail[:200],
                    self.stats.bad_acks,
                )
            return
        self._inflight.ack(ack.boot, ack.seqs)
        try:
            deleted = await self._outbox.delete_acked(ack.boot, ack.seqs)
        except sqlite3.Error as e:
            # The rows stay and go out again after a restart; the cloud drops duplicates.
            log.error("outbox delete failed: %s", e)
            deleted = 0
        self.stats.acks += 1
        self.stats.acked_rows += deleted
        self.stats.last_ack_ms = int(time.time() * 1000)
        self._wake.set()
        if self._downlink is not None:
            self._downlink.cloud_ack()

    # --- sending ---------------------------------------------------------------------------

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            wait_s = await self._send_next(client)
            if wait_s == 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def _send_next(self, client: aiomqtt.Client) -> float | None:
        """Send one batch if one may go now: 0 if sent, else seconds to wait (None: until woken)."""
        now = time.monotonic()
        if self._committed_seq > self._live_cursor and self._inflight.has_room(live=True):
            await self._send_live(client, now)
            return 0
        due = self._inflight.next_due(now)
        if due is not None:
            if not self._bucket.ready(now):
                return self._bucket.wait_s(now)
            await self._resend(client, due, now)
            return 0
        if self._backlog and self._inflight.has_room():
            if not self._bucket.ready(now):
                return self._bucket.wait_s(now)
            await self._send_backlog(client, now)
            return 0
        deadline = self._inflight.next_deadline()
        return None if deadline is None else max(deadline - now, 1e-3)

    async def _send_live(self, client: aiomqtt.Client, now: float) -> None:
        rows = await self._outbox.live_rows(self._live_cursor, self._pub.live_batch_max)
        if not rows:
            self._live_cursor = max(self._live_cursor, self._committed_seq)
            return
        take = _same_boot_prefix(rows)  # newest first; one batch = one boot
        boot = take[0].boot
        oldest_taken = take[-1].seq
        # More live rows than one batch (the link was slow): the older ones
        # queue behind the backlog instead of delaying the newest position.
        self._backlog.add(self._live_cursor, oldest_taken - 1)
        self._live_cursor = max(self._live_cursor, rows[0].seq)
        take.reverse()
        self._send_new(client, boot, take, live=True, now=now)

    async def _send_backlog(self, client: aiomqtt.Client, now: float) -> None:
        after, upto = self._backlog.first()
        rows = await self._outbox.backlog_rows(after, upto, self._pub.backlog_batch)
        if not rows:
            self._backlog.advance(upto)
            return
        take = _same_boot_prefix(rows)
        boot = take[0].boot
        self._backlog.advance(take[-1].seq)
        self._bucket.consume(len(take), now)
        self._send_new(client, boot, take, live=False, now=now)

    async def _resend(self, client: aiomqtt.Client, batch: Batch, now: float) -> None:
        rows = await self._outbox.rows_by_seq(sorted(batch.seqs))
        if not self._inflight.tracks(batch):
            return  # fully acked while we were reading
        rows = [r for r in rows if r.boot == batch.boot and r.seq in batch.seqs]
        if not rows:
            self._inflight.forget(batch)  # dropped by the caps meanwhile
            return
        self._inflight.resent(batch, [r.seq for r in rows], now)
        self._bucket.consume(len(rows), now)
        self.stats.resent_batches += 1
        log.debug("re-sending batch boot=%d seqs %d..%d", batch.boot, rows[0].seq, rows[-1].seq)
        for _, payload, content_type in build_payloads(batch.boot, rows):
            self._transmit(client, batch, payload, content_type, len(rows))

    def _send_new(
        self, client: aiomqtt.Client, boot: int, rows: list[OutboxRow], *, live: bool, now: float
    ) -> None:
        for part, payload, content_type in build_payloads(boot, rows):
            batch = self._inflight.add(boot, (r.seq for r in part), live=live, now=now)
            self._transmit(client, batch, payload, content_type, len(part))

    def _transmit(
        self, client: aiomqtt.Client, batch: Batch, payload: bytes, content_type: str, n: int
    ) -> None:
        # The publish runs as its own task: waiting for each PUBACK in turn would
        # cap throughput at one batch per round trip on a slow cellular link.
        task = asyncio.create_task(
            self._publish(client, batch, batch.attempts, payload, content_type)
        )
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        self.stats.batches_sent += 1
        self.stats.fixes_sent += n

    async def _publish(
        self, client: aiomqtt.Client, batch: Batch, attempt: int, payload: bytes, content_type: str
    ) -> None:
        try:
            await client.publish(
                self._telemetry_topic,
                payload,
                qos=1,
                properties=_props(PacketTypes.PUBLISH, ContentType=content_type),
                timeout=self._pub.ack_timeout_s,
            )
        except aiomqtt.MqttError as e:
            log.debug("publish failed (re-sent after ack timeout): %s", e)
            return
        if batch.attempts == attempt:
            batch.pubacked = True


async def _first_of(
    *events: asyncio.Event, task: asyncio.Task[None] | None = None, within: float | None = None
) -> None:
    """Wait until one of ``events`` is set or ``task`` ends (or ``within`` s pass)."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(
            [*waits, *([task] if task else [])], timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for w in waits:
            w.cancel()
