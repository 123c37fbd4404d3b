"""Read a serial NMEA receiver on the event loop, surviving unplug and re-plug.

The port is opened with pyserial in non-blocking mode and its fd registered
with ``loop.add_reader``: no thread and no polling; the loop wakes only when
bytes arrive. A vanished port (EIO, EOF, file gone) or a silent one is closed
and reopened with capped backoff; every loss and every return is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import serial

from fleet_edge.config import GpsConfig
from fleet_edge.gps.decoder import NmeaDecoder
from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.logs import Every
from fleet_edge.pacing import Backoff

log = logging.getLogger(__name__)

# A receiver writes an epoch's sentences back to back; this much silence
# after one means the burst is complete.
BURST_IDLE_S = 0.25

READ_CHUNK = 4096
FIRST_RETRY_S = 0.5
QUIET_WARN_EVERY_S = 600.0


@dataclass
class GpsSourceStats:
    port: str = "waiting"  # waiting (never opened) | open | lost
    fix: str = "unknown"  # unknown | fix | no_fix
    no_fix_reason: str | None = None
    lost: int = 0  # times an open port went away
    restored: int = 0  # times it came back after a loss
    readings_dropped: int = 0  # readings the sampler could not take in time
    last_fix_t: int | None = None


class GpsSerialSource:
    def __init__(self, cfg: GpsConfig, out: asyncio.Queue[GpsReading]) -> None:
        self._cfg = cfg
        self._out = out
        self._decoder = NmeaDecoder(not_before=cfg.not_before)
        self.stats = GpsSourceStats()
        self._last_open_error = ""
        self._internal_errors = 0
        self._quiet_warning = Every(QUIET_WARN_EVERY_S)

    def health(self) -> dict[str, Any]:
        """A compact summary for the status message."""
        rejected = dict(self._decoder.rejected)
        if self._internal_errors:
            rejected["internal_error"] = self._internal_errors
        return {
            "port": self.stats.port,
            "fix": self.stats.fix,
            "lost": self.stats.lost,
            "restored": self.stats.restored,
            "sentences": self._decoder.accepted,
            "rejected": rejected,
            "date_flags": dict(self._decoder.date_flags),
            "in_view": self._decoder.sats_in_view,
            "dropped": self.stats.readings_dropped,
        }

    async def run(self) -> None:
        backoff = Backoff(FIRST_RETRY_S, self._cfg.reopen_max_s)
        port = str(self._cfg.port)
        # A port that opens but never talks (wrong device, dead receiver) is
        # reopened every few seconds; say so once in a while, not every time.
        quiet = False
        while True:
            ser = self._open()
            if ser is None:
                await asyncio.sleep(backoff.next_delay())
                continue
            if self.stats.port == "lost":
                self.stats.restored += 1
            if not quiet:
                log.info("GPS %s %s", port, "restored" if self.stats.restored else "open")
            self.stats.port = "open"
            accepted_before = self._decoder.accepted
            try:
                reason = await self._read_until_lost(ser, backoff)
            finally:
                # Linux releases the fd even when close() reports an error (EIO
                # after a hangup): nothing to retry, and nothing may escape.
                with contextlib.suppress(OSError, serial.SerialException):
                    ser.close()
                self._publish(self._decoder.reset())
            self.stats.port = "lost"
            self.stats.lost += 1
            self._set_fix_state(None)
            talked = self._decoder.accepted > accepted_before
            if talked or self._quiet_warning.due():
                log.warning("GPS %s lost (%s); reopening", port, reason)
            quiet = not talked
            await asyncio.sleep(backoff.next_delay())

    def _open(self) -> serial.Serial | None:
        try:
            # timeout=0: reads never block. exclusive: a second reader (another
            # agent, a stray gpsd) would steal half the sentences.
            return serial.Serial(
                str(self._cfg.port), baudrate=self._cfg.baud, timeout=0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as e:
            # pyserial repeats the path and errno in its message; the errno text is enough.
            errno_ = getattr(e, "errno", None)
            err = os.strerror(errno_) if isinstance(errno_, int) else str(e)
            if err != self._last_open_error:  # one line per new condition, not per retry
                log.info("waiting for GPS on %s: %s", self._cfg.port, err)
                self._last_open_error = err
            return None

    async def _read_until_lost(self, ser: serial.Serial, backoff: Backoff) -> str:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()
        fd = ser.fileno()
        accepted_at_open = self._decoder.accepted
        last_rx = loop.time()
        self._last_open_error = ""

        def on_readable() -> None:
            nonlocal last_rx
            try:
                data = ser.read(READ_CHUNK)
            except (serial.SerialException, OSError) as e:
                loop.remove_reader(fd)
                if not lost.done():
                    # pyserial's wording for EOF on a vanished device is a paragraph.
                    lost.set_result("disconnected" if "returned no data" in str(e) else str(e))
                return
            if not data:
                return
            last_rx = loop.time()
            try:
                self._publish(self._decoder.feed(data))
            except Exception:  # a decoder bug must cost one chunk, not the GPS
                self._internal_errors += 1
                if self._internal_errors == 1:
                    log.exception("NMEA decoder failed; chunk dropped")
                self._decoder.reset()
            if self._decoder.accepted > accepted_at_open:
                # The port delivers real sentences: the next loss starts a fresh backoff.
                backoff.reset()

        loop.add_reader(fd, on_readable)
        try:
            while True:
                silent_for = loop.time() - last_rx
                if silent_for >= self._cfg.silence_timeout_s:
                    return f"silent for {silent_for:.0f} s"
                if self._decoder.pending and silent_for >= BURST_IDLE_S:
                    # The burst is over: emit it now. Waiting for the next one
                    # adds an epoch of latency and strands the last fix of a
                    # receiver that stops talking.
                    self._publish(self._decoder.flush_pending())
                # Wake at least every BURST_IDLE_S (data arrives in a callback
                # that does not wake this loop): 4 cheap wake-ups a second.
                wait = min(self._cfg.silence_timeout_s - silent_for, BURST_IDLE_S)
                if self._decoder.pending:
                    wait = min(wait, max(BURST_IDLE_S - silent_for, 0.01))
                await asyncio.wait({lost}, timeout=wait)
                if lost.done():
                    return lost.result()
        finally:
            loop.remove_reader(fd)

    def _publish(self, readings: list[GpsReading]) -> None:
        for r in readings:
            self._set_fix_state(r)
            try:
                self._out.put_nowait(r)
            except asyncio.QueueFull:
                self.stats.readings_dropped += 1

    def _set_fix_state(self, r: GpsReading | None) -> None:
        if isinstance(r, GpsFix):
            state, reason = "fix", None
            self.stats.last_fix_t = r.t
        elif isinstance(r, NoFix):
            state, reason = "no_fix", r.reason
        else:
            state, reason = "unknown", None
        if state != self.stats.fix:
            if state == "fix":
                log.info("GPS fix acquired")
            elif self.stats.fix == "fix":
                log.info("GPS fix lost (%s)", reason or "port closed")
        self.stats.fix, self.stats.no_fix_reason = state, reason
