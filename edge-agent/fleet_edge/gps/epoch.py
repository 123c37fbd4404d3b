"""Merge the sentences of one receiver epoch into one GpsFix (or NoFix).

A receiver reports each navigation solution as a burst of sentences: RMC and
GGA carry the UTC time of the solution, VTG and GSA carry none and belong to
the burst they arrive in. Which sentences a burst holds depends on the
receiver, so the assembler learns it: a burst is complete once it holds every
type that each of the last few bursts held (and at least an RMC, the only
sentence with a date). Taking what every recent burst had, not just the last
one, matters because receivers add sentences to some bursts only (GSV or ZDA
once a second at 5 Hz). A burst that never completes is emitted when the next
one starts, or by ``flush_pending`` when the line goes quiet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.gps.nmea_parser import Gga, Gsa, Rmc, Sentence, Vtg

_MS_PER_DAY = 86_400_000
_LEARN_FROM = 4  # bursts whose common sentence types make a burst complete
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _kind(s: Sentence) -> str:
    return type(s).__name__.upper()


@dataclass
class _Burst:
    tod_ms: int
    seen: set[str] = field(default_factory=set)
    rmc: Rmc | None = None
    gga: Gga | None = None
    vtg: Vtg | None = None
    gsa: Gsa | None = None
    emitted: bool = False


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


class EpochAssembler:
    def __init__(self) -> None:
        self._burst: _Burst | None = None
        self._expected: frozenset[str] = frozenset({"RMC", "GGA"})
        self._recent: list[frozenset[str]] = []
        self.without_rmc = 0  # bursts lost because their RMC was missing or corrupt

    def add(self, s: Sentence) -> list[GpsReading]:
        out: list[GpsReading] = []
        if isinstance(s, Rmc | Gga):
            if s.tod_ms is None:
                # No time means no solution at all (receiver still starting).
                out += self._close(learn=False)
                if isinstance(s, Rmc):
                    out.append(NoFix(None, "no_time"))
                return out
            if self._burst is None or self._burst.tod_ms != s.tod_ms:
                out += self._close(learn=True)
                self._burst = _Burst(s.tod_ms)
        burst = self._burst
        if burst is None:
            return out  # a VTG/GSA before any timed sentence: nothing to attach it to
        kind = _kind(s)
        if kind not in burst.seen:
            # First of each kind wins: multi-constellation receivers send one
            # GSA per system, all with the same fix type.
            burst.seen.add(kind)
            if not burst.emitted:
                setattr(burst, kind.lower(), s)
        if not burst.emitted and "RMC" in burst.seen and self._expected <= burst.seen:
            burst.emitted = True
            out += self._reading(burst)
        return out

    def flush(self) -> list[GpsReading]:
        """Emit what is pending (the port closed); what is missing stays missing."""
        return self._close(learn=False)

    @property
    def pending(self) -> bool:
        """A burst has started but not been emitted yet."""
        return self._burst is not None and not self._burst.emitted

    def flush_pending(self) -> list[GpsReading]:
        """The line went quiet after a burst: emit it now rather than at the next one.

        The burst stays open, so a late sentence of the same time is not
        emitted twice, and its types are still learned when the next one starts.
        """
        burst = self._burst
        if burst is None or burst.emitted:
            return []
        burst.emitted = True
        return self._reading(burst)

    def _close(self, *, learn: bool) -> list[GpsReading]:
        burst, self._burst = self._burst, None
        if burst is None:
            return []
        if learn:
            self._recent = [*self._recent[-(_LEARN_FROM - 1) :], frozenset(burst.seen)]
            self._expected = frozenset.intersection(*self._recent)
        return [] if burst.emitted else self._reading(burst)

    def _reading(self, b: _Burst) -> list[GpsReading]:
        rmc, gga, vtg, gsa = b.rmc, b.gga, b.vtg, b.gsa
        if rmc is None:
            self.without_rmc += 1
            return [NoFix(None, "gga_no_fix")] if gga is not None and gga.quality == 0 else []
        t = None if rmc.day is None else (rmc.day.toordinal() - _UNIX_EPOCH_ORDINAL) * _MS_PER_DAY
        t = None if t is None else t + b.tod_ms
        if not rmc.valid:
            return [NoFix(t, "rmc_void")]
        if gga is not None and gga.quality == 0:
            return [NoFix(t, "gga_no_fix")]
        if gsa is not None and gsa.fix_type == 1:
            return [NoFix(t, "gsa_no_fix")]
        if rmc.lat is None or rmc.lon is None:
            return [NoFix(t, "no_position")]
        if t is None:
            return [NoFix(None, "no_date")]
        lat, lon = round(rmc.lat, 6), round(rmc.lon, 6)
        if lat == 0.0 and lon == 0.0:
            # What some receivers print before their first fix, with status A.
            return [NoFix(t, "zero_position")]
        speed = vtg.speed_kmh if vtg is not None and vtg.speed_kmh is not None else rmc.speed_kmh
        course = vtg.course_deg if vtg is not None and vtg.course_deg is not None else None
        if course is None:
            course = rmc.course_deg
        hdop = gga.hdop if gga is not None and gga.hdop is not None else None
        if hdop is None and gsa is not None:
            hdop = gsa.hdop
        fix_type = gsa.fix_type if gsa is not None and gsa.fix_type in (2, 3) else None
        return [
            GpsFix(
                t=t,
                lat=lat,
                lon=lon,
                speed_kmh=_round(speed, 1),
                course_deg=_round(course, 1),
                alt_m=_round(gga.alt_m, 1) if gga is not None else None,
                hdop=_round(hdop, 2),
                sats=gga.sats if gga is not None else None,
                fix_type=2 if fix_type == 2 else 3 if fix_type == 3 else None,
            )
        ]
