"""MQTT ingest worker: device messages in, batched transactions, end-to-end acks out.

Several workers (in one process or many) join the MQTT v5 shared subscription
and the broker splits device traffic between them. Storage is keyed, so no
correctness depends on which worker sees which message.

A device deletes a fix only when our ack covers it, and we ack only after the
transaction that stored it committed. If the database is down nothing is
acked, pending data is bounded by ``ingest_max_pending``, and the devices keep
(and later resend) everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from fleet_cloud.ingest.filters import FilterLimits, PlausibilityFilter
from fleet_cloud.ingest.mqtt_source import MqttSource
from fleet_cloud.live import LiveState
from fleet_cloud.registry import DeviceInfo, DeviceRegistry
from fleet_cloud.remote_config import intake as remote_intake
from fleet_cloud.settings import Settings
from fleet_cloud.store import DeadLetter, PositionRows, StatusRow, write_batch
from fleet_wire import (
    CT_JSON,
    INGEST_SUBSCRIPTION,
    MAX_PAYLOAD_BYTES,
    Ack,
    Down,
    Fix,
    RejectedFix,
    Status,
    TopicError,
    Up,
    WireError,
    decode_json,
    decode_model,
    decode_telemetry,
    down_topic,
    encode_json,
    parse_up_topic,
    seq_ranges,
)

log = logging.getLogger(__name__)

# A dead letter keeps the whole payload (at most the wire limit), so a batch
# that was acked because it can never be stored as sent can still be replayed.
DEAD_PAYLOAD_KEEP = MAX_PAYLOAD_BYTES
ACK_MAX_RANGES = 1000  # fleet_wire.Ack limit per message


@dataclass
class Batch:
    positions: PositionRows = field(default_factory=PositionRows)
    dead: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    # (device_id, boot) -> seqs this batch makes durable, acked after commit
    acks: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    # HTTP submissions waiting for this batch's commit
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def size(self) -> int:
        return len(self.positions) + len(self.dead) + len(self.statuses)


class IngestWorker:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        registry: DeviceRegistry,
        live: LiveState,
        index: int = 0,
    ) -> None:
        self.s = settings
        self.pool = pool
        self.registry = registry
        self.live = live
        self.client_id = f"{settings.ingest_client_prefix}-{index}"
        self.counters: Counter[str] = Counter()
        self.last_filtered: dict[int, str] = {}
        self.filter = PlausibilityFilter(
            FilterLimits(
                max_speed_kmh=settings.filter_max_speed_kmh,
                future_skew_s=settings.filter_future_skew_s,
                max_age_days=settings.filter_max_age_days,
                max_hdop=settings.filter_max_hdop,
                min_sats=settings.filter_min_sats,
            )
        )
        self._cur = Batch()
        self._sealed: Batch | None = None  # written but not yet committed (or failed)
        self._flush_now = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.source = MqttSource(
            settings.mqtt_host,
            settings.mqtt_port,
            self.client_id,
            INGEST_SUBSCRIPTION,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            session_expiry_s=settings.ingest_session_expiry_s,
        )

    @property
    def connected(self) -> bool:
        return self.source.connected

    # -- intake -------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled; the source reconnects by itself."""
        flusher = asyncio.create_task(self._flush_loop(), name=f"{self.client_id}-flush")
        self.source.start()
        try:
            async for items in self.source.batches():
                for item in items:
                    await self._room.wait()  # backpressure while the database lags
                    await self.handle(item.topic, item.payload, item.content_type)
                # Let the live relay and the flusher run between batches. Nothing
                # above suspends while messages are buffered (a set Event's wait()
                # returns at once), so a backlog after a CPU stall was consumed in
                # one go, up to max_buffer messages, with the live path on hold:
                # at 10k fixes/s the relay then published 2-4 times a second.
                await asyncio.sleep(0)
        finally:
            flusher.cancel()
            self.source.stop()

    # -- one message --------------------------------------------------------

    async def handle(self, topic: str, payload: object, content_type: str | None) -> None:
        self.counters["messages"] += 1
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        now = datetime.now(UTC)
        try:
            where = parse_up_topic(topic)
        except TopicError as e:
            return self._dead(topic, "bad_topic", str(e), raw, None)
        if not raw and where.kind is Up.STATUS:
            # An empty retained publish deletes the retained status (the cloud
            # does this when it revokes a device): MQTT housekeeping, not data.
            self.counters["status_cleared"] += 1
            return None
        device = await self._device(where.device_id)
        if device is None:
            return self._dead(topic, "unknown_device", "", raw, where.device_id)
        if not device.enabled:
            return self._dead(topic, "device_disabled", "", raw, where.device_id)
        if where.kind is Up.TELEMETRY:
            self._telemetry(topic, raw, content_type, device, now)
        elif where.kind is Up.STATUS:
            self._status(topic, raw, content_type, device, now)
        elif where.kind in (Up.CONFIG, Up.CMD):
            await self._remote_reply(topic, raw, content_type, device, where.kind)
        else:
            # events payloads are reserved in v1 (later work)
            self._dead(topic, "unsupported_kind", where.kind.value, raw, device.device_id)
        if self._cur.size() >= self.s.ingest_batch_max:
            self._flush_now.set()

    async def _remote_reply(
        self, topic: str, raw: bytes, ct: str | None, dev: DeviceInfo, kind: Up
    ) -> None:
        """Config reports and command results: rare, stored at once (remote_config.intake).

        A database outage is waited out like in _device: the message is kept.
        """
        delay = 0.5
        while True:
            try:
                problem = await remote_intake.store(self.pool, dev.device_id, kind, raw, ct)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("storing a %s reply failed (%s); retry in %.1fs", kind, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if problem is not None:
            self._dead(topic, problem[0], problem[1], raw, dev.device_id)

    async def _device(self, device_id: str) -> DeviceInfo | None:
        """The registry's answer, waiting out a database outage (a cache miss needs a query).

        Raising here would end run() and with it this worker for good; waiting
        keeps the message, acks nothing meanwhile, and resumes by itself.
        """
        delay = 0.5
        while True:
            try:
                return await self.registry.get(device_id)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                self.counters["registry_errors"] += 1
                log.warning("device lookup failed (%s); retry in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _telemetry(
        self, topic: str, raw: bytes, ct: str | None, dev: DeviceInfo, now: datetime
    ) -> None:
        try:
            boot, fixes, rejected = decode_telemetry(raw, ct)
        except WireError as e:
            self._dead(topic, e.reason, e.detail, raw, dev.device_id)
            # Ack what the batch names, if it names anything: the device would
            # otherwise resend a message that can never be stored as sent. It
            # stays whole in the dead-letter table for a replay after a fix.
            ids = _salvage_ids(raw, ct)
            if ids is not None:
                self._cur.acks[(dev.device_id, ids[0])].extend(ids[1])
            return
        seqs = self._cur.acks[(dev.device_id, boot)]
        seqs.extend(self.add_fixes(topic, dev, boot, fixes, rejected, now))

    def add_fixes(
        self,
        topic: str,
        dev: DeviceInfo,
        boot: int,
        fixes: list[Fix],
        rejected: list[RejectedFix],
        now: datetime,
    ) -> list[int]:
        """Put decoded fixes into the current batch (MQTT and HTTP alike).

        Returns the seqs the batch makes durable (stored, filtered or
        dead-lettered with a seq): what an ack may cover once it commits.
        Filter decisions are kept in ``last_filtered`` for the HTTP answer.
        """
        batch = self._cur
        handled: list[int] = []
        recv_ms = int(now.timestamp() * 1000)
        limits = self.filter.limits.merged(dev.filter_overrides)
        accepted: list[Fix] = []
        self.last_filtered = {}
        for fix in fixes:
            reason = self.filter.check(dev.device_id, fix, recv_ms, limits)
            batch.positions.add(dev.device_id, boot, fix, now, dev.vehicle_id, reason)
            handled.append(fix.seq)
            if reason is None:
                accepted.append(fix)
            else:
                self.last_filtered[fix.seq] = reason
                self.counters[f"filtered_{reason}"] += 1
        for bad in rejected:
            self._dead(topic, "schema", bad.reason, encode_json(bad.raw), dev.device_id)
            if bad.seq is not None:
                handled.append(bad.seq)  # dead-lettered is handled: the device may drop it
        self.counters["fixes"] += len(fixes)
        if accepted and dev.vehicle_id is not None:
            self.live.apply_fixes(dev.tenant_id, dev.vehicle_id, accepted, recv_ms)
        self._update_room()
        if self._cur.size() >= self.s.ingest_batch_max:
            self._flush_now.set()
        return handled

    def commit_waiter(self) -> asyncio.Future[None]:
        """A future done when what is in the current batch is committed (HTTP ingest).

        Call it right after add_fixes, with no await in between: the batch
        must not be sealed before the waiter joins it.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._cur.waiters.append(fut)
        self._flush_now.set()
        return fut

    def record_dead(
        self, topic: str, reason: str, detail: str, raw: bytes, device_id: str | None
    ) -> None:
        """A message that cannot be used: dead-letter it with the next batch."""
        self._dead(topic, reason, detail, raw, device_id)

    async def run_flush_only(self) -> None:
        """Batch writing without MQTT intake: HTTP ingest on an API-only node."""
        await self._flush_loop()

    def _status(
        self, topic: str, raw: bytes, ct: str | None, dev: DeviceInfo, now: datetime
    ) -> None:
        try:
            status = decode_model(raw, Status, ct)
        except WireError as e:
            return self._dead(topic, e.reason, e.detail, raw, dev.device_id)
        body = status.model_dump(mode="json", exclude_none=True)
        self._cur.statuses.append(StatusRow(dev.device_id, status.online, body, now))
        if dev.vehicle_id is not None:
            self.live.apply_online(dev.tenant_id, dev.vehicle_id, status.online)

    def _dead(
        self, topic: str, reason: str, detail: str, raw: bytes, device_id: str | None
    ) -> None:
        self.counters[f"dead_{reason}"] += 1
        log.info("dead letter from %s: %s %s", device_id or topic[:80], reason, detail[:200])
        self._cur.dead.append(
            DeadLetter(topic[:500], reason, detail[:2000], raw[:DEAD_PAYLOAD_KEEP], device_id)
        )
        self._update_room()

    def _update_room(self) -> None:
        pending = self._cur.size() + (self._sealed.size() if self._sealed else 0)
        if pending >= self.s.ingest_max_pending:
            if self._room.is_set():
                log.warning("%s: %d pending, pausing intake", self.client_id, pending)
            self._room.clear()
        else:
            self._room.set()

    # -- flushing -----------------------------------------------------------

    async def drain(self) -> None:
        """Stop taking messages and write (and ack) what was taken, before disconnecting."""
        self._room.clear()
        self.source.pause()
        await self.flush()

    async def _flush_loop(self) -> None:
        period = self.s.ingest_flush_ms / 1000
        failures = 0
        while True:
            try:
                await asyncio.wait_for(self._flush_now.wait(), timeout=period)
            except TimeoutError:
                pass
            self._flush_now.clear()
            try:
                await self.flush()
                failures = 0
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                failures += 1
                delay = min(0.5 * 2**failures, 10.0)
                log.warning("batch write failed (%s); nothing acked, retry in %.1fs", e, delay)
                await asyncio.sleep(delay)
            except Exception:
                # A bug must not end the flusher silently (nothing would ever be
                # acked again): say so loudly and keep retrying; devices keep the data.
                failures += 1
                log.exception("batch write failed unexpectedly; nothing acked, retrying")
                await asyncio.sleep(min(0.5 * 2**failures, 10.0))

    async def flush(self) -> None:
        """Write the pending batch in one transaction, then ack what it made durable."""
        if self._sealed is None:
            if self._cur.size() == 0:
                for fut in self._cur.waiters:  # nothing to write: already durable
                    if not fut.done():
                        fut.set_result(None)
                self._cur.waiters.clear()
                return
            self._sealed, self._cur = self._cur, Batch()
        batch = self._sealed
        t0 = time.perf_counter()
        async with self.pool.acquire() as conn:
            inserted = await write_batch(conn, batch.positions, batch.dead, batch.statuses)
        self._sealed = None
        self._update_room()
        self.counters["stored"] += inserted
        self.counters["duplicates"] += len(batch.positions) - inserted
        log.debug("batch of %d in %.1f ms", batch.size(), (time.perf_counter() - t0) * 1000)
        for fut in batch.waiters:
            if not fut.done():
                fut.set_result(None)
        await self._send_acks(batch.acks)

    async def _send_acks(self, acks: dict[tuple[str, int], list[int]]) -> None:
        for (device_id, boot), seqs in acks.items():
            if not seqs:
                continue
            ranges = seq_ranges(seqs)
            for i in range(0, len(ranges), ACK_MAX_RANGES):
                ack = Ack(boot=boot, seqs=ranges[i : i + ACK_MAX_RANGES])
                if not self.source.publish(
                    down_topic(device_id, Down.ACK), encode_json(ack), CT_JSON
                ):
                    # Not connected: the device resends; the retransmission is
                    # stored once and acked then.
                    self.counters["acks_not_sent"] += 1
                    return
                self.counters["acks"] += 1


def _salvage_ids(raw: bytes, ct: str | None) -> tuple[int, list[int]] | None:
    """(boot, seqs) of a rejected telemetry batch whose envelope still names them."""
    try:
        doc = decode_json(raw, ct)
    except WireError:
        return None
    if not isinstance(doc, dict):
        return None
    boot, fixes = doc.get("boot"), doc.get("fixes")
    if not (_wire_int(boot, 0) and isinstance(fixes, list)):
        return None
    seqs = [f["seq"] for f in fixes if isinstance(f, dict) and _wire_int(f.get("seq"), 1)]
    return (boot, seqs) if seqs else None  # type: ignore[return-value]


def _wire_int(v: object, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v < 2**53
