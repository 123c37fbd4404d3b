"""Keep the latest engine values: open the adapter, find the vehicle, poll, survive everything.

The poller is one task. It opens the ELM327 (reopening with backoff when it
is unplugged), initialises it, waits for an ECU that answers (ignition off
means none does: UNABLE TO CONNECT / NO DATA, which is normal), discovers the
supported PIDs, reads the VIN and trouble codes, then polls the configured
PIDs at ``pids_per_s``. The agent reads ``snapshot()`` when a fix arrives.

Ignition is derived, not read: on while the engine turns (RPM > 0) or the
battery is charging (alternator voltage); off once the ECU has been silent
for ``ecu_silent_s`` or the engine stands with the battery not charging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fleet_edge.config import ObdConfig
from fleet_edge.obd.elm327 import MAX_PIDS_PER_REQUEST, Elm327
from fleet_edge.obd.link import ElmLink, LinkLost
from fleet_edge.obd.pids import BY_NAME, BY_PID
from fleet_edge.pacing import Backoff
from fleet_wire import Engine

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
SILENT_RETRY_S = 2.0  # between attempts to reach an ECU that does not answer
RPM_PID = BY_NAME["rpm"].pid
_ENGINE_KEYS = frozenset(Engine.model_fields) - {"age", "ign", "dtc"}


@dataclass
class ObdStats:
    port: str = "waiting"  # waiting | open | lost
    ecu: str = "unknown"  # unknown | connected | silent
    lost: int = 0
    restored: int = 0
    timeouts: int = 0
    requests: int = 0
    ignition_changes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class ObdPoller:
    def __init__(self, cfg: ObdConfig) -> None:
        self._cfg = cfg
        self._wanted = [BY_NAME[n].pid for n in cfg.pids]
        self.stats = ObdStats()
        self.adapter: str | None = None
        self.protocol: str | None = None
        self.supported: set[int] = set()
        self.vin: str | None = None
        self.dtcs: list[str] | None = None
        self.pending_dtcs: list[str] | None = None
        self.values: dict[str, tuple[float, float]] = {}  # key -> (value, monotonic time)
        self.battery_v: tuple[float, float] | None = None  # ATRV, (volts, monotonic time)
        self._last_answer: float | None = None  # monotonic time the ECU last gave data
        self._ignition: bool | None = None
        self._elm: Elm327 | None = None
        self.connected = asyncio.Event()  # an ECU answered (for doctor)
        self.last_error = ""  # why the port could not be opened, for doctor

    def reconfigure(self, cfg: ObdConfig) -> None:
        """New PID set and rates (remote config); the poll loop picks them up."""
        self._cfg = cfg
        self._wanted = [BY_NAME[n].pid for n in cfg.pids]

    # -- what the agent reads ------------------------------------------------

    @property
    def ignition(self) -> bool | None:
        return self._ignition

    def snapshot(self, now: float | None = None) -> Engine | None:
        """Latest engine values younger than max_age_s, with the age of the oldest of them."""
        now = time.monotonic() if now is None else now
        fresh = {
            k: v
            for k, (v, t) in self.values.items()
            if k in _ENGINE_KEYS and now - t <= self._cfg.max_age_s
        }
        if not fresh and self._ignition is None:
            return None
        ages = [now - t for k, (_, t) in self.values.items() if k in fresh]
        eng: dict[str, Any] = {k: int(v) if k == "run" else float(v) for k, v in fresh.items()}
        try:
            return Engine(
                age=int(max(ages) * 1000) if ages else None,
                ign=self._ignition,
                dtc=self.dtcs[:64] if self.dtcs else None,
                **eng,
            )
        except ValueError:
            # An ECU value outside the wire's range (a bad sensor): drop the set
            # rather than the fix; counted so it shows in health.
            self.stats.rejected["out_of_range"] += 1
            return Engine(ign=self._ignition)

    def health(self) -> dict[str, Any]:
        rejected = Counter(self.stats.rejected)
        if self._elm is not None:
            rejected.update(self._elm.rejected)
        return {
            "port": self.stats.port,
            "ecu": self.stats.ecu,
            "protocol": self.protocol,
            "ign": self._ignition,
            "lost": self.stats.lost,
            "restored": self.stats.restored,
            "requests": self.stats.requests,
            "timeouts": self.stats.timeouts,
            "rejected": dict(rejected),
            "dtc": self.dtcs or [],
            "pending_dtc": self.pending_dtcs or [],
        }

    # -- the task ------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(FIRST_RETRY_S, self._cfg.reopen_max_s)
        last_error = ""
        while True:
            try:
                link = ElmLink(str(self._cfg.port), self._cfg.baud)
            except LinkLost as e:
                if str(e) != last_error:
                    log.info("waiting for OBD adapter on %s: %s", self._cfg.port, e)
                    last_error = self.last_error = str(e)
                await asyncio.sleep(backoff.next_delay())
                continue
            last_error = ""
            if self.stats.port == "lost":
                self.stats.restored += 1
            self.stats.port = "open"
            log.info(
                "OBD adapter %s %s", self._cfg.port, "restored" if self.stats.restored else "open"
            )
            try:
                reason = await self._session(link, backoff)
            finally:
                link.close()
                self._keep_counts()
                self._elm = None
            self.stats.port = "lost"
            self.stats.lost += 1
            self.stats.ecu = "unknown"
            self._set_ignition(None if self._ignition is None else False)
            log.warning("OBD adapter %s lost (%s); reopening", self._cfg.port, reason)
            await asyncio.sleep(backoff.next_delay())

    def _keep_counts(self) -> None:
        if self._elm is not None:
            self.stats.rejected.update(self._elm.rejected)
            self._elm.rejected.clear()

    async def _session(self, link: ElmLink, backoff: Backoff) -> str:
        elm = Elm327(link, self._cfg.timeout_s, self._cfg.search_timeout_s)
        self._elm = elm
        timeouts_in_a_row = 0
        while True:
            try:
                await self._connected_session(elm, backoff)
            except LinkLost as e:
                return str(e) or "disconnected"
            except TimeoutError:
                # A hung or very slow adapter: re-initialise; three in a row
                # and the port is reopened (a USB adapter that wedged).
                self.stats.timeouts += 1
                timeouts_in_a_row += 1
                if timeouts_in_a_row >= 3:
                    return "adapter not answering"
                continue
            timeouts_in_a_row = 0

    async def _connected_session(self, elm: Elm327, backoff: Backoff) -> None:
        """Initialise, wait for the ECU, poll until it falls silent; returns to re-initialise."""
        await elm.initialise()
        self.adapter = elm.adapter
        while not await self._reach_ecu(elm):
            await self._idle_check(elm)
            await asyncio.sleep(SILENT_RETRY_S)
        backoff.reset()
        self.protocol = elm.protocol_name
        self.supported = elm.supported
        self.stats.ecu = "connected"
        self.connected.set()
        log.info(
            "OBD connected: %s, %d PIDs supported",
            self.protocol or "unknown protocol",
            len(self.supported),
        )
        if self.vin is None:
            self.vin = await elm.vin()
        await self._poll(elm)

    async def _reach_ecu(self, elm: Elm327) -> bool:
        self.stats.requests += 1
        ok = await elm.connect()
        if ok:
            self._last_answer = time.monotonic()
        else:
            self.stats.ecu = "silent"
        return ok

    async def _idle_check(self, elm: Elm327) -> None:
        """ECU silent: read the battery (the adapter measures it) to decide ignition."""
        v = await elm.voltage()
        now = time.monotonic()
        if v is not None:
            self.battery_v = (v, now)
            self.values["vbat"] = (v, now)
        silent_for = now - (self._last_answer or 0.0)
        if silent_for >= self._cfg.ecu_silent_s and (v is None or v < self._cfg.charging_v):
            self._set_ignition(False)

    async def _poll(self, elm: Elm327) -> None:
        # Unsupported PIDs would only earn NO DATA. With nothing left (or an
        # empty config) RPM is still read: ignition is derived from it.
        wanted_from = self._wanted
        wanted = [p for p in self._wanted if p in elm.supported] or [RPM_PID]
        next_dtc = 0.0
        i = 0
        loop = asyncio.get_running_loop()
        while True:
            if self._wanted is not wanted_from:  # reconfigured
                wanted_from = self._wanted
                wanted = [p for p in self._wanted if p in elm.supported] or [RPM_PID]
                i = 0
            period = 1.0 / self._cfg.pids_per_s
            now = loop.time()
            if now >= next_dtc:
                self.dtcs = await elm.dtcs(0x03)
                self.pending_dtcs = await elm.dtcs(0x07)
                next_dtc = now + self._cfg.dtc_interval_s
            n = MAX_PIDS_PER_REQUEST if elm.multi_pid else 1
            group = [wanted[(i + k) % len(wanted)] for k in range(min(n, len(wanted)))]
            i = (i + len(group)) % len(wanted)
            started = loop.time()
            self.stats.requests += 1
            values = await elm.read(group)
            t = time.monotonic()
            for pid, v in values.items():
                self.values[BY_PID[pid].key] = (v, t)
            if values:
                self._last_answer = t
                self.stats.ecu = "connected"
            self._update_ignition(t)
            if self._last_answer is not None and t - self._last_answer >= self._cfg.ecu_silent_s:
                # Ignition off (or the ECU went away): back to searching, which
                # is also how the adapter notices the ignition coming back.
                self.stats.ecu = "silent"
                # What the ECU said last is history now; only the adapter's own
                # battery reading stays current.
                self.values = {k: v for k, v in self.values.items() if k == "vbat"}
                await self._idle_check(elm)
                return
            await asyncio.sleep(max(0.0, started + period * len(group) - loop.time()))

    def _update_ignition(self, now: float) -> None:
        rpm = self.values.get("rpm")
        volts = self.values.get("vbat")
        fresh_rpm = rpm is not None and now - rpm[1] <= self._cfg.max_age_s
        fresh_v = volts is not None and now - volts[1] <= self._cfg.max_age_s
        if fresh_rpm and rpm is not None and rpm[0] > 0:
            self._set_ignition(True)
        elif fresh_v and volts is not None and volts[0] >= self._cfg.charging_v:
            self._set_ignition(True)
        elif fresh_rpm:
            self._set_ignition(False)

    def _set_ignition(self, on: bool | None) -> None:
        if on != self._ignition:
            if self._ignition is not None and on is not None:
                self.stats.ignition_changes += 1
                log.info("ignition %s", "on" if on else "off")
            self._ignition = on
