"""Wire the agent's long-lived tasks together and stop them in the right order.

gps source -> (queue) -> sampler -> outbox writer -> [SQLite] -> publisher
                                                          health reporter
                      remote config + commands (downlink) <-> publisher

On SIGTERM/SIGINT: the GPS stops first, the readings already queued are
sampled, the writer commits everything it holds, the publisher sends the
offline status and disconnects. All within STOP_BUDGET_S (systemd's
TimeoutStopSec must stay above it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import signal
import time
from dataclasses import dataclass

from fleet_edge.config import AgentConfig
from fleet_edge.gps.fix import GpsFix, GpsReading
from fleet_edge.gps.source import make_gps_source
from fleet_edge.health import HealthReporter
from fleet_edge.obd.poller import ObdPoller
from fleet_edge.outbox import Outbox
from fleet_edge.outbox_writer import OutboxWriter
from fleet_edge.publisher import Publisher
from fleet_edge.remote.config_keeper import load_config_state
from fleet_edge.remote.downlink import Downlink
from fleet_edge.remote.runtime import AgentRuntime
from fleet_edge.remote.state import ConfigState
from fleet_edge.sampler import Sampler
from fleet_edge.watchdog import SystemdWatchdog
from fleet_wire.models import MAX_JSON_INT

log = logging.getLogger(__name__)

STOP_BUDGET_S = 4.5
# Readings between the GPS and the sampler; the sampler keeps up easily, this
# only absorbs a burst (a receiver replaying its buffer after a reopen).
READINGS_QUEUE_MAX = 256


def new_boot_id() -> int:
    """Random id of this run: (boot, seq) stays unique even if the outbox file is lost."""
    return secrets.randbelow(MAX_JSON_INT + 1)


@dataclass
class LatestFix:
    """The receiver's newest fix, for the ``locate`` command."""

    fix: GpsFix
    received: float  # monotonic
    recorded: bool


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        outbox: Outbox,
        boot: int,
        remote: tuple[AgentConfig, ConfigState] | None = None,
    ) -> None:
        """``cfg``: the config in force; ``remote``: (local config, stored remote state)."""
        self.cfg = cfg
        self.boot = boot
        self.outbox = outbox
        self.latest_fix: LatestFix | None = None
        self._stop: asyncio.Event | None = None
        local, state = remote or (cfg, ConfigState())
        self.downlink = Downlink(local, state, cfg, AgentRuntime(self))
        self.readings: asyncio.Queue[GpsReading] = asyncio.Queue(READINGS_QUEUE_MAX)
        self.gps = make_gps_source(cfg.gps, self.readings)
        # Engine values and ignition, attached to the fixes that follow them.
        self.obd = ObdPoller(cfg.obd) if cfg.obd.enabled else None
        self.sampler = Sampler(cfg.sampler)
        # The publisher asks the health reporter for a status on each connect;
        # the health reporter reads the publisher's counters: hence the lambda.
        self.publisher = Publisher(
            cfg, outbox, status_provider=lambda: self.health.build_status(), downlink=self.downlink
        )
        self.writer = OutboxWriter(
            outbox,
            boot,
            cfg.outbox.commit_interval_s,
            cfg.outbox.commit_max_rows,
            on_commit=self.publisher.notify_committed,
        )
        self.health = HealthReporter(
            boot,
            cfg.publisher.status_interval_s,
            outbox,
            self.gps,
            self.sampler,
            self.writer,
            self.publisher,
            obd=self.obd,
        )

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "agent %s starting: boot=%d gps=%s broker=%s:%d outbox=%s",
            self.cfg.device_id,
            self.boot,
            self.cfg.gps.port,
            self.cfg.broker.host,
            self.cfg.broker.port,
            self.cfg.outbox.path,
        )
        self._stop = stop
        async with asyncio.TaskGroup() as tg:
            gps = tg.create_task(self.gps.run(), name="gps-source")
            obd = tg.create_task(self.obd.run(), name="obd-poller") if self.obd else None
            sampler = tg.create_task(self._sample(), name="sampler")
            writer = tg.create_task(self.writer.run(), name="outbox-writer")
            publisher = tg.create_task(self.publisher.run(), name="publisher")
            health = tg.create_task(self.health.run(self.publisher.publish_status), name="health")
            downlink = tg.create_task(self.downlink.run(), name="downlink")
            vital = {"gps-source": gps, "sampler": sampler, "outbox-writer": writer,
                     "publisher": publisher, **({"obd-poller": obd} if obd else {})}  # fmt: skip
            watchdog = tg.create_task(
                SystemdWatchdog.from_env(vital, self.outbox.last_seq, self._status_line).run(),
                name="watchdog",
            )
            await stop.wait()
            log.info("stopping")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_BUDGET_S
            gps.cancel()
            if obd is not None:
                obd.cancel()
            health.cancel()
            downlink.cancel()
            watchdog.cancel()  # tells systemd STOPPING=1
            await asyncio.wait({gps})
            self._drain_readings()
            sampler.cancel()
            self.writer.stop()
            self.publisher.stop()
            await asyncio.wait({writer, publisher}, timeout=max(0.1, deadline - loop.time()))
            for t in (writer, publisher):
                if not t.done():
                    log.warning("%s did not stop in time; cancelled", t.get_name())
                    t.cancel()
        log.info("stopped (outbox: %d fixes committed this run)", self.writer.stats.committed)

    def _status_line(self) -> str:
        """systemd's STATUS= (shown by `systemctl status fleet-agent`)."""
        link = "online" if self.publisher.stats.connected else "offline"
        return f"{link}; {self.writer.stats.committed} fixes recorded this run"

    async def _sample(self) -> None:
        while True:
            self._take(await self.readings.get())

    def _take(self, reading: GpsReading) -> None:
        if not isinstance(reading, GpsFix):
            return
        ignition = self.obd.ignition if self.obd is not None else None
        recorded = self.sampler.accept(reading, ignition)
        if recorded:
            self.record(reading)
        self.latest_fix = LatestFix(reading, time.monotonic(), recorded)

    def record(self, fix: GpsFix) -> None:
        if self.obd is not None:
            fix = dataclasses.replace(fix, eng=self.obd.snapshot())
        self.writer.submit(fix)

    def stop_requested(self) -> None:
        """Stop as on SIGTERM (the ``restart`` command: systemd starts us again)."""
        if self._stop is not None:
            self._stop.set()

    def _drain_readings(self) -> None:
        while not self.readings.empty():
            self._take(self.readings.get_nowait())


async def run_agent(
    cfg: AgentConfig, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when ``handle_signals``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        # The stored remote config (if any) overlays the local file from the start.
        state, in_force = load_config_state(cfg)
        outbox = await Outbox.open(cfg.outbox.path, cfg.outbox.max_rows, cfg.outbox.max_bytes)
        try:
            await Agent(in_force, outbox, new_boot_id(), remote=(cfg, state)).run(stop)
        finally:
            await outbox.close()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
