"""The agent's systemd watchdog: ping only while the agent is really working.

systemd restarts the service when no ``WATCHDOG=1`` arrives for WatchdogSec.
Pinging from a thread or a bare timer would prove only that the process
exists; here each ping is earned, every WatchdogSec/2, by:

- the event loop running this task (a blocked or hung loop sends nothing);
- every vital task (GPS source, sampler, outbox writer, publisher, OBD
  poller) still running (a crashed one ends the agent anyway; belt and braces);
- the outbox's worker thread answering a cheap query within the tick: every
  commit, read and ack of the outbox goes through that one thread, so a
  SQLite call hung on the SD card stalls the whole pipeline and shows here.

One missed tick is tolerated by construction (two ticks per WatchdogSec):
systemd acts only when the agent is stuck for the whole WatchdogSec.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fleet_edge.sdnotify import Notifier, watchdog_interval_s

log = logging.getLogger(__name__)

# STATUS= (shown by `systemctl status`) is refreshed this often at most.
STATUS_EVERY_S = 10.0


class SystemdWatchdog:
    def __init__(
        self,
        notifier: Notifier,
        interval_s: float | None,
        vital: Mapping[str, asyncio.Task[Any]],
        probe: Callable[[], Awaitable[object]],
        status: Callable[[], str],
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.vital = vital
        self.probe = probe
        self.status = status
        self.pings = 0
        self.withheld = 0  # ticks without a ping because something was stuck
        self._probe_task: asyncio.Future[object] | None = None
        self._probe_started = 0.0

    @classmethod
    def from_env(
        cls,
        vital: Mapping[str, asyncio.Task[Any]],
        probe: Callable[[], Awaitable[object]],
        status: Callable[[], str],
    ) -> SystemdWatchdog:
        return cls(Notifier.from_env(), watchdog_interval_s(), vital, probe, status)

    async def run(self) -> None:
        if not self.notifier.enabled:
            return  # not under systemd (Type=notify): nothing to tell anyone
        await asyncio.sleep(0)  # let the tasks created before us take their first step
        self.notifier.ready(self.status())
        try:
            if self.interval_s is None:
                await self._status_only()
            else:
                await self._ping_loop(self.interval_s / 2)
        except asyncio.CancelledError:
            self.notifier.stopping("stopping")
            raise
        finally:
            if self._probe_task is not None:
                self._probe_task.cancel()

    async def _status_only(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.notifier.status(self.status())

    async def _ping_loop(self, period: float) -> None:
        last_status = time.monotonic()
        stuck_before: str | None = None
        while True:
            await asyncio.sleep(period)
            stuck = await self.check(period)
            if stuck is None:
                self.notifier.watchdog()
                self.pings += 1
                if stuck_before is not None:
                    log.warning("watchdog: recovered (%s)", stuck_before)
                    self.notifier.status(self.status())
                    last_status = time.monotonic()
            else:
                self.withheld += 1
                if stuck != stuck_before:
                    log.error("watchdog: not pinging systemd: %s", stuck)
                    self.notifier.status(f"stuck: {stuck}")
            stuck_before = stuck
            if stuck is None and time.monotonic() - last_status >= STATUS_EVERY_S:
                self.notifier.status(self.status())
                last_status = time.monotonic()

    async def check(self, wait_s: float) -> str | None:
        """None when the agent is making progress, else what is stuck."""
        for name, task in self.vital.items():
            if task.done():
                return f"task {name} has ended"
        # One probe at a time: a probe that has not come back is waited for
        # again next tick, never stacked behind itself on the worker thread.
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.ensure_future(self.probe())
            self._probe_started = time.monotonic()
        done, _ = await asyncio.wait({self._probe_task}, timeout=wait_s)
        if not done:
            waited = time.monotonic() - self._probe_started
            return f"outbox worker has not answered for {waited:.0f} s"
        if self._probe_task.exception() is not None:
            # An outbox that answers with an error is working; the writer reports errors.
            log.debug("watchdog probe failed: %s", self._probe_task.exception())
        return None
