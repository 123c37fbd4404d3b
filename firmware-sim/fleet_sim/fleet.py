"""A fleet of simulated vehicles speaking wire protocol v1 straight to the broker.

Each vehicle is what the cloud sees of a real unit, without the agent's
hardware or outbox: its own MQTT v5 client (client id = device id) with a
persistent session, a retained status and a Last Will, telemetry batches at
QoS 1 under a random boot id with seq from 1, and end-to-end acks that let it
forget fixes (unacked ones are sent again after a timeout). Fixes live in
memory only, bounded, so a process restart is a new boot.

All vehicles share one asyncio loop; a vehicle costs one socket and two tasks,
so one process carries a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import resource
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_sim import __version__
from fleet_sim.backoff import Backoff
from fleet_sim.oracle import Oracle
from fleet_sim.route import RouteSim, SimFix
from fleet_sim.unacked import Unacked
from fleet_wire import (
    CT_JSON,
    Ack,
    Down,
    OutboxHealth,
    Status,
    Up,
    WireError,
    decode_model,
    down_topic,
    encode_json,
    maybe_compress,
    telemetry_body,
    up_topic,
)
from fleet_wire.models import MAX_FIXES_PER_BATCH

log = logging.getLogger(__name__)

AGENT = f"fleet-sim/{__version__}"
# Seeds of vehicle i: base seed * this + i, so fleets with different seeds differ.
SEED_STRIDE = 1_000_000
MAX_VEHICLES = 100_000
# Fresh batches one vehicle sends per tick when it has a backlog (after an
# outage); the rest waits for the next tick so the loop stays responsive.
MAX_FRESH_BATCHES_PER_TICK = 4
# How long shutdown waits for vehicles to say goodbye before cutting them off.
SHUTDOWN_S = 15.0
STATS_EVERY_S = 30.0


@dataclass(frozen=True)
class FleetOptions:
    count: int = 50
    first: int = 0  # index of the first vehicle (several processes can split a fleet)
    prefix: str = "sim"
    host: str = "127.0.0.1"
    port: int = 1883
    hz: float = 1.0
    batch_seconds: float = 1.0
    seed: int = 1
    oracle: Path | None = None
    resend_seconds: float = 10.0
    max_unacked: int = 600
    status_seconds: float = 60.0
    session_expiry: int = 86_400
    keepalive: int = 60
    # device id -> broker password (docs/security.md); empty: no password sent.
    passwords: dict[str, str] = field(default_factory=dict, hash=False)

    def device_id(self, i: int) -> str:
        return f"{self.prefix}-{i:04d}"


@dataclass
class FleetStats:
    connected: int = 0
    connects: int = 0
    fixes: int = 0  # recorded
    sent: int = 0  # fixes published for the first time
    resent: int = 0
    acked: int = 0
    dropped: int = 0
    batches: int = 0
    payload_bytes: int = 0
    bad_acks: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def wire_fix(seq: int, fix: SimFix) -> dict[str, Any]:
    """A fix as it goes on the wire: rounded to what the data is worth, since
    every byte is paid for on cellular (1e-6 degree is 11 cm)."""
    hdg = round(fix.heading_deg, 1)
    return {
        "seq": seq,
        "t": fix.t_ms,
        "lat": round(fix.lat, 6),
        "lon": round(fix.lon, 6),
        "spd": round(fix.speed_kmh, 1),
        "hdg": 0.0 if hdg >= 360.0 else hdg,
        "alt": round(fix.alt_m, 1),
        "hdop": round(fix.hdop, 1),
        "sat": fix.sats,
        "fix": fix.fix_type,
    }


def _props(content_type: str | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if content_type is not None:
        props.ContentType = content_type
    return props


class Vehicle:
    def __init__(
        self,
        index: int,
        opts: FleetOptions,
        stats: FleetStats,
        stop: asyncio.Event,
        oracle: Oracle | None,
    ) -> None:
        self.device_id = opts.device_id(index)
        self.opts = opts
        self.stats = stats
        self.stop = stop
        self.oracle = oracle
        self.route = RouteSim(opts.seed * SEED_STRIDE + index, opts.hz)
        # A fresh random boot id per run: (boot, seq) must never repeat, even
        # when the same fleet (same seeds) is started again.
        self.boot = secrets.randbits(48)
        self.seq = 0
        self.unacked = Unacked(opts.max_unacked, opts.resend_seconds)
        self.rng = random.Random(secrets.randbits(64))
        self.connects = 0
        self.last_ack_ms: int | None = None
        self.t_telemetry = up_topic(self.device_id, Up.TELEMETRY)
        self.t_status = up_topic(self.device_id, Up.STATUS)
        self.t_ack = down_topic(self.device_id, Down.ACK)

    # -- recording -----------------------------------------------------------

    def record_due(self) -> None:
        """Step the route up to the wall clock; keep every fix that has a position."""
        now = _now_ms()
        lines: list[dict[str, Any]] = []
        while self.route.next_t_ms <= now:
            fix = self.route.step()
            if not fix.fix_type:  # a device never sends a fix without a position
                continue
            self.seq += 1
            wire = wire_fix(self.seq, fix)
            # orjson hands back a 4 KiB allocation whatever the length; a copy
            # held for minutes costs its real size (~120 bytes) instead.
            body = bytes(memoryview(encode_json(wire)))
            dropped = self.unacked.add(self.seq, body, fix.t_ms)
            self.stats.fixes += 1
            self.stats.dropped += len(dropped)
            if self.oracle is not None:
                lines.append(
                    {
                        "src": "fleet",
                        "dev": self.device_id,
                        "boot": self.boot,
                        "seq": self.seq,
                        "t": wire["t"],
                        "lat": wire["lat"],
                        "lon": wire["lon"],
                        "spd": wire["spd"],
                    }
                )
                lines.extend(
                    {
                        "src": "fleet",
                        "dev": self.device_id,
                        "boot": self.boot,
                        "seq": s,
                        "drop": "cap",
                    }
                    for s in dropped
                )
        if lines and self.oracle is not None:
            self.oracle.write(lines)

    # -- connection ----------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        connect_props = Properties(PacketTypes.CONNECT)
        # Persistent session: acks published while the vehicle is offline wait
        # for it at the broker.
        connect_props.SessionExpiryInterval = self.opts.session_expiry
        will = aiomqtt.Will(
            self.t_status,
            encode_json(Status(online=False)),
            qos=1,
            retain=True,
            properties=_props(CT_JSON),
        )
        return aiomqtt.Client(
            self.opts.host,
            self.opts.port,
            identifier=self.device_id,
            username=self.device_id,
            password=self.opts.passwords.get(self.device_id),
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            will=will,
            keepalive=self.opts.keepalive,
            timeout=10,
        )

    async def run(self, start_delay: float) -> None:
        try:
            await self._run(start_delay)
        except Exception:
            # A bug in one vehicle must be loud but must not stop the others.
            self.stats.error("crash")
            log.exception("%s: vehicle crashed", self.device_id)

    async def _run(self, start_delay: float) -> None:
        if await self._sleep(start_delay):
            return
        backoff = Backoff(self.rng)
        while not self.stop.is_set():
            try:
                async with self._client() as client:
                    backoff.reset()
                    self.connects += 1
                    self.stats.connects += 1
                    self.stats.connected += 1
                    try:
                        await self._session(client)
                    finally:
                        self.stats.connected -= 1
            except aiomqtt.MqttError as e:
                self.stats.error(type(e).__name__)
                log.debug("%s: %s", self.device_id, e)
            if self.stop.is_set():
                return
            # The vehicle keeps driving and recording while it is offline.
            self.record_due()
            if await self._sleep(backoff.next()):
                return

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True if stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.t_ack, qos=1)
        await self._publish_status(client, online=True)
        reader = asyncio.create_task(self._read_acks(client), name=f"{self.device_id}-acks")
        ticker = asyncio.create_task(self._tick(client), name=f"{self.device_id}-tick")
        stopper = asyncio.create_task(self.stop.wait())
        tasks: list[asyncio.Task[Any]] = [reader, ticker, stopper]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            exc = None if t is stopper else t.exception()
            if exc is not None:
                raise exc
        if self.stop.is_set():
            # A clean DISCONNECT suppresses the Will, so say goodbye ourselves.
            await self._publish_status(client, online=False)

    async def _publish_status(self, client: aiomqtt.Client, online: bool) -> None:
        status = Status(
            online=online,
            t=_now_ms(),
            boot=self.boot,
            agent=AGENT,
            outbox=OutboxHealth(
                depth=len(self.unacked),
                oldest_ms=self.unacked.oldest_t_ms(),
                dropped=self.unacked.dropped,
                bytes=self.unacked.held_bytes,
            ),
            last_ack=self.last_ack_ms,
            reconnects=max(0, self.connects - 1),
        )
        await client.publish(
            self.t_status,
            encode_json(status),
            qos=1,
            retain=True,
            properties=_props(CT_JSON),
        )

    async def _tick(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        period = self.opts.batch_seconds
        # Vehicles tick out of phase with each other, so the broker sees a
        # steady stream, not a burst every period.
        next_tick = loop.time() + self.rng.uniform(0.0, period)
        next_status = loop.time() + self.opts.status_seconds * self.rng.uniform(0.5, 1.0)
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += period
            if next_tick < loop.time():  # fell behind (a busy machine): don't burst to catch up
                next_tick = loop.time() + period
            self.record_due()
            await self._send(client)
            if loop.time() >= next_status:
                next_status = loop.time() + self.opts.status_seconds
                await self._publish_status(client, online=True)

    async def _send(self, client: aiomqtt.Client) -> None:
        now = time.monotonic()
        for _ in range(MAX_FRESH_BATCHES_PER_TICK):
            fresh = self.unacked.take_fresh(now, MAX_FIXES_PER_BATCH)
            if not fresh:
                break
            await self._publish_batch(client, fresh)
            self.stats.sent += len(fresh)
        due = self.unacked.take_due(now, MAX_FIXES_PER_BATCH)
        if due:
            await self._publish_batch(client, due)
            self.stats.resent += len(due)

    async def _publish_batch(self, client: aiomqtt.Client, fixes: list[tuple[int, bytes]]) -> None:
        body = telemetry_body(self.boot, [b for _, b in fixes])
        payload, content_type = maybe_compress(body)
        await client.publish(self.t_telemetry, payload, qos=1, properties=_props(content_type))
        self.stats.batches += 1
        self.stats.payload_bytes += len(payload)

    async def _read_acks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value != self.t_ack or not isinstance(message.payload, bytes):
                continue
            content_type = getattr(message.properties, "ContentType", None)
            try:
                ack = decode_model(message.payload, Ack, content_type)
            except WireError as e:
                self.stats.bad_acks += 1
                log.warning("%s: bad ack (%s)", self.device_id, e)
                continue
            if ack.boot != self.boot:
                continue  # for an earlier run of this vehicle, whose fixes are gone
            self.stats.acked += self.unacked.ack(ack.seqs)
            self.last_ack_ms = _now_ms()


def _raise_fd_limit(needed: int) -> None:
    """One socket per vehicle: lift the soft descriptor limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        log.warning("descriptor limit %d is below the %d this fleet needs", hard, needed)


async def _report(stats: FleetStats, count: int, vehicles: list[Vehicle]) -> None:
    while True:
        await asyncio.sleep(STATS_EVERY_S)
        per_fix = stats.payload_bytes / (stats.sent + stats.resent) if stats.sent else 0.0
        log.info(
            "connected %d/%d, fixes %d, sent %d, resent %d, acked %d, unacked %d, dropped %d, "
            "%.1f payload bytes/fix%s",
            stats.connected,
            count,
            stats.fixes,
            stats.sent,
            stats.resent,
            stats.acked,
            sum(len(v.unacked) for v in vehicles),
            stats.dropped,
            per_fix,
            f", errors {stats.errors}" if stats.errors else "",
        )


async def run_fleet(opts: FleetOptions, stop: asyncio.Event | None = None) -> FleetStats:
    """Run the fleet until SIGTERM/SIGINT (or until ``stop`` is set)."""
    if not 1 <= opts.count <= MAX_VEHICLES:
        raise ValueError(f"count must be within 1..{MAX_VEHICLES}")
    if opts.passwords:
        ids = [opts.device_id(i) for i in range(opts.first, opts.first + opts.count)]
        missing = [d for d in ids if d not in opts.passwords]
        if missing:
            raise ValueError(
                f"no password for {len(missing)} vehicle(s) in the password file, e.g. {missing[0]}"
            )
    _raise_fd_limit(opts.count + 64)
    oracle: Oracle | None = None
    if opts.oracle is not None:
        try:
            oracle = Oracle(opts.oracle)
        except OSError as e:
            raise OSError(e.errno, f"cannot open --oracle {opts.oracle}: {e.strerror}") from None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = FleetStats()
    vehicles = [
        Vehicle(i, opts, stats, stop, oracle) for i in range(opts.first, opts.first + opts.count)
    ]
    # Connect gradually (200 per second) rather than all in the same instant.
    ramp = opts.count / 200.0
    log.info(
        "fleet of %d (%s..%s) -> %s:%d, %g Hz, batches every %gs",
        opts.count,
        vehicles[0].device_id,
        vehicles[-1].device_id,
        opts.host,
        opts.port,
        opts.hz,
        opts.batch_seconds,
    )
    tasks = [
        asyncio.create_task(v.run(random.uniform(0.0, ramp)), name=v.device_id) for v in vehicles
    ]
    reporter = asyncio.create_task(_report(stats, opts.count, vehicles))
    try:
        await stop.wait()
        _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_S)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        reporter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if oracle is not None:
            oracle.close()
    per_fix = stats.payload_bytes / max(1, stats.sent + stats.resent)
    log.info(
        "fleet stopped: %d fixes recorded, %d sent, %d resent, %d acked, %d dropped, "
        "%d batches, %.1f payload bytes/fix",
        stats.fixes,
        stats.sent,
        stats.resent,
        stats.acked,
        stats.dropped,
        stats.batches,
        per_fix,
    )
    return stats
