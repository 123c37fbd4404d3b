"""Fixes from a gpsd daemon over its JSON protocol, spoken directly on asyncio.

gpsd-py3 is unmaintained and blocking, and the protocol is small: connect,
send ``?WATCH={"enable":true,"json":true};``, then read one JSON object per
line. TPV carries time, mode (0/1 no fix, 2 = 2D, 3 = 3D), position, speed
(m/s) and track; SKY carries the DOPs and satellites (used / in view).

gpsd reports an epoch incrementally (a TPV after RMC, another after GGA...
all with the same time), so TPVs of one time are merged and the epoch is
emitted when the next time arrives or the line has been quiet for a moment,
like the serial source's bursts. A connection that closes (gpsd restarted),
fails or goes silent is reopened with backoff; every refused line is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson

from fleet_edge.config import GpsConfig
from fleet_edge.gps.epoch import BUILD_DATE, date_problem
from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.gps.serial_source import BURST_IDLE_S, FIRST_RETRY_S, GpsSourceStats
from fleet_edge.logs import Every
from fleet_edge.pacing import Backoff

log = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true};\n'
MAX_LINE_BYTES = 65_536  # a SKY with 60+ satellites is a few KiB; past this it is not gpsd
MS_TO_KMH = 3.6

BAD_JSON = "bad_json"
TOO_LONG = "too_long"
BAD_FIELD = "bad_field"
GPSD_ERROR = "gpsd_error"


def _num(doc: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if lo <= v <= hi else None


def _time_ms(value: object) -> int | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return int(t.timestamp() * 1000)


class GpsdDecoder:
    """gpsd JSON lines -> readings; never raises on input."""

    def __init__(self, not_before: Any = None) -> None:
        self._not_before = not_before or BUILD_DATE
        self._buf = bytearray()
        self._discarding = False
        self.rejected: Counter[str] = Counter()
        self.date_flags: Counter[str] = Counter()
        self.accepted = 0
        self.hdop: float | None = None
        self.sats_used: int | None = None
        self.in_view: int | None = None
        self._tpv: dict[str, Any] | None = None  # the epoch being merged
        self._tpv_t: int | None = None
        self._error_log = Every(60.0)

    @property
    def pending(self) -> bool:
        return self._tpv is not None

    def feed(self, data: bytes) -> list[GpsReading]:
        out: list[GpsReading] = []
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if self._discarding:
                if not last:
                    self._discarding = False
                continue
            if len(self._buf) + len(part) > MAX_LINE_BYTES:
                self.rejected[TOO_LONG] += 1
                self._buf.clear()
                self._discarding = last
                continue
            if last:
                self._buf += part
                continue
            line = bytes(self._buf) + part
            self._buf.clear()
            if line.strip():
                out += self._line(line)
        return out

    def reset(self) -> list[GpsReading]:
        self._buf.clear()
        self._discarding = False
        return self.flush()

    def flush(self) -> list[GpsReading]:
        tpv, self._tpv, self._tpv_t = self._tpv, None, None
        return [] if tpv is None else [self._reading(tpv)]

    def _line(self, line: bytes) -> list[GpsReading]:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.rejected[BAD_JSON] += 1
            return []
        if not isinstance(doc, dict):
            self.rejected[BAD_JSON] += 1
            return []
        cls = doc.get("class")
        if cls == "TPV":
            return self._on_tpv(doc)
        if cls == "SKY":
            self._on_sky(doc)
        elif cls == "ERROR":
            self.rejected[GPSD_ERROR] += 1
            if self._error_log.due():
                log.warning("gpsd: %s", str(doc.get("message", ""))[:200])
        return []  # VERSION, DEVICES, WATCH, DEVICE...: nothing to do

    def _on_tpv(self, doc: dict[str, Any]) -> list[GpsReading]:
        mode = doc.get("mode")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 3:
            self.rejected[BAD_FIELD] += 1
            return []
        self.accepted += 1
        t = _time_ms(doc.get("time"))
        out: list[GpsReading] = []
        if self._tpv is not None and t != self._tpv_t:
            out += self.flush()
        if self._tpv is None:
            self._tpv, self._tpv_t = dict(doc), t
        else:
            self._tpv.update(doc)  # later TPVs of the epoch know more (altitude, 3D)
        return out

    def _on_sky(self, doc: dict[str, Any]) -> None:
        self.accepted += 1
        self.hdop = _num(doc, "hdop", 0, 100)
        sats = doc.get("satellites")
        used = doc.get("uSat")
        seen = doc.get("nSat")
        if isinstance(sats, list):
            if not isinstance(used, int):
                used = sum(1 for s in sats if isinstance(s, dict) and s.get("used") is True)
            if not isinstance(seen, int):
                seen = len(sats)
        self.sats_used = used if isinstance(used, int) and 0 <= used <= 255 else None
        self.in_view = seen if isinstance(seen, int) and 0 <= seen <= 255 else None

    def _reading(self, doc: dict[str, Any]) -> GpsReading:
        t = _time_ms(doc.get("time"))
        mode = int(doc.get("mode", 0))
        if mode < 2:
            return NoFix(t, "gpsd_no_fix")
        if t is None:
            return NoFix(None, "no_time")
        day = datetime.fromtimestamp(t / 1000, UTC).date()
        problem = date_problem(day, self._not_before)
        if problem is not None:
            self.date_flags[problem] += 1
            return NoFix(None, problem)
        lat = _num(doc, "lat", -90, 90)
        lon = _num(doc, "lon", -180, 180)
        if lat is None or lon is None:
            return NoFix(t, "no_position")
        lat, lon = round(lat, 6), round(lon, 6)
        if lat == 0.0 and lon == 0.0:
            return NoFix(t, "zero_position")
        speed = _num(doc, "speed", 0, 300)
        alt = _num(doc, "altMSL", -1000, 20_000)
        if alt is None:
            alt = _num(doc, "alt", -1000, 20_000)
        return GpsFix(
            t=t,
            lat=lat,
            lon=lon,
            speed_kmh=None if speed is None else round(speed * MS_TO_KMH, 1),
            course_deg=_round(_num(doc, "track", 0, 360), 1),
            alt_m=_round(alt, 1) if mode == 3 else None,
            hdop=_round(self.hdop, 2),
            sats=self.sats_used,
            fix_type=3 if mode == 3 else 2,
        )


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


class GpsdSource:
    def __init__(self, cfg: GpsConfig, out: asyncio.Queue[GpsReading]) -> None:
        self._cfg = cfg
        self._out = out
        self._decoder = GpsdDecoder(cfg.not_before)
        self.stats = GpsSourceStats()
        self._last_error = ""

    @property
    def where(self) -> str:
        return f"gpsd {self._cfg.gpsd_host}:{self._cfg.gpsd_port}"

    def health(self) -> dict[str, Any]:
        return {
            "source": "gpsd",
            "port": self.stats.port,
            "fix": self.stats.fix,
            "lost": self.stats.lost,
            "restored": self.stats.restored,
            "sentences": self._decoder.accepted,
            "rejected": dict(self._decoder.rejected),
            "date_flags": dict(self._decoder.date_flags),
            "in_view": self._decoder.in_view,
            "dropped": self.stats.readings_dropped,
        }

    @property
    def sats_in_view(self) -> int | None:
        return self._decoder.in_view

    async def run(self) -> None:
        backoff = Backoff(FIRST_RETRY_S, self._cfg.reopen_max_s)
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    self._cfg.gpsd_host, self._cfg.gpsd_port
                )
            except OSError as e:
                err = e.strerror or str(e)
                if err != self._last_error:
                    log.info("waiting for %s: %s", self.where, err)
                    self._last_error = err
                await asyncio.sleep(backoff.next_delay())
                continue
            self._last_error = ""
            if self.stats.port == "lost":
                self.stats.restored += 1
            self.stats.port = "open"
            log.info("%s %s", self.where, "restored" if self.stats.restored else "connected")
            try:
                reason = await self._read(reader, writer, backoff)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
                self._publish(self._decoder.reset())
            self.stats.port = "lost"
            self.stats.lost += 1
            self.stats.fix = "unknown"
            log.warning("%s lost (%s); reconnecting", self.where, reason)
            await asyncio.sleep(backoff.next_delay())

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backoff: Backoff
    ) -> str:
        try:
            writer.write(WATCH)
            await writer.drain()
        except (OSError, ConnectionError) as e:
            return str(e)
        loop = asyncio.get_running_loop()
        last_rx = loop.time()
        while True:
            wait = BURST_IDLE_S if self._decoder.pending else self._cfg.silence_timeout_s
            try:
                # asyncio.timeout: 3.11's wait_for can swallow a racing cancellation.
                async with asyncio.timeout(wait):
                    data = await reader.read(65_536)
            except TimeoutError:
                if self._decoder.pending:
                    self._publish(self._decoder.flush())
                if loop.time() - last_rx >= self._cfg.silence_timeout_s:
                    return f"silent for {self._cfg.silence_timeout_s:.0f} s"
                continue
            except (OSError, ConnectionError) as e:
                return str(e)
            if not data:
                return "gpsd closed the connection"
            last_rx = loop.time()
            accepted = self._decoder.accepted
            self._publish(self._decoder.feed(data))
            if self._decoder.accepted > accepted:
                backoff.reset()

    def _publish(self, readings: list[GpsReading]) -> None:
        for r in readings:
            if isinstance(r, GpsFix):
                if self.stats.fix != "fix":
                    log.info("GPS fix acquired (gpsd)")
                self.stats.fix = "fix"
                self.stats.last_fix_t = r.t
            else:
                self.stats.fix, self.stats.no_fix_reason = "no_fix", r.reason
            try:
                self._out.put_nowait(r)
            except asyncio.QueueFull:
                self.stats.readings_dropped += 1
