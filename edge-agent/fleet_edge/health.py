"""The agent's health: the retained ``up/status`` document and a periodic log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from fleet_edge import __version__
from fleet_edge.gps.source import GpsSource
from fleet_edge.obd.poller import ObdPoller
from fleet_edge.outbox import Outbox, OutboxStats
from fleet_edge.outbox_writer import OutboxWriter
from fleet_edge.publisher import Publisher
from fleet_edge.sampler import Sampler
from fleet_wire import OutboxHealth, Status
from fleet_wire.models import MAX_TIME_MS, MIN_TIME_MS

log = logging.getLogger(__name__)


def _plausible(ms: int | None) -> int | None:
    """A wall-clock time, or None while the clock is obviously unset (a Pi has no RTC: 1970)."""
    return ms if ms is not None and MIN_TIME_MS <= ms <= MAX_TIME_MS else None


class HealthReporter:
    def __init__(
        self,
        boot: int,
        interval_s: float,
        outbox: Outbox,
        gps: GpsSource,
        sampler: Sampler,
        writer: OutboxWriter,
        publisher: Publisher,
        obd: ObdPoller | None = None,
    ) -> None:
        self._boot = boot
        self.interval_s = interval_s  # remote config may change it live
        self._outbox = outbox
        self._gps = gps
        self._sampler = sampler
        self._writer = writer
        self._publisher = publisher
        self._obd = obd

    async def build_status(self) -> Status:
        st = await self._outbox.stats()
        try:
            return self._status(st)
        except ValidationError as e:
            # A health report must never stop the agent; send the essentials.
            log.error("status document refused by the wire schema: %s", e)
            return Status(online=True, boot=self._boot, agent=__version__)

    def _status(self, st: OutboxStats) -> Status:
        pub = self._publisher
        now = _plausible(int(time.time() * 1000))
        oldest_age_s = (
            max(0, (now - st.oldest_ms) // 1000) if now and st.oldest_ms is not None else None
        )
        w = self._writer.stats
        return Status(
            online=True,
            t=now,
            boot=self._boot,
            agent=__version__,
            outbox=OutboxHealth(
                depth=st.depth, oldest_ms=st.oldest_ms, dropped=st.dropped, bytes=st.bytes
            ),
            last_ack=_plausible(pub.stats.last_ack_ms),
            reconnects=pub.stats.reconnects,
            health={
                "oldest_age_s": oldest_age_s,
                "gps": self._gps.health(),
                "sampler": {
                    "seen": self._sampler.stats.seen,
                    "recorded": self._sampler.stats.recorded,
                    "events": dict(self._sampler.stats.events),
                    "moving": self._sampler.moving,
                },
                **({"obd": self._obd.health()} if self._obd is not None else {}),
                "writer": {
                    "invalid": w.invalid,
                    "queue_full": w.queue_full,
                    "commit_errors": w.commit_errors,
                },
                "mqtt": pub.health(),
            },
        )

    async def run(self, publish: Callable[[Status], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            status = await self.build_status()
            await publish(status)
            self._log(status)

    def _log(self, s: Status) -> None:
        g = self._gps.health()
        ob = s.outbox or OutboxHealth()
        mqtt = self._publisher.health()
        log.info(
            "gps %s/%s sentences=%d rejected=%d | recorded %d/%d | outbox depth=%d dropped=%d"
            " | mqtt %s inflight=%d reconnects=%d",
            g["port"],
            g["fix"],
            g["sentences"],
            sum(g["rejected"].values()),
            self._sampler.stats.recorded,
            self._sampler.stats.seen,
            ob.depth,
            ob.dropped,
            "up" if mqtt["connected"] else "down",
            mqtt["inflight"],
            s.reconnects or 0,
        )
