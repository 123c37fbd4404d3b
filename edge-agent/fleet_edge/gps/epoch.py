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

GSV (satellites in view) and ZDA (date with a four-digit year) do not take
part in bursts: GSV keeps a per-constellation count of satellites in view,
ZDA the receiver's own idea of the year.

Date sanity: a receiver whose almanac is stale, or whose firmware predates a
GPS week-number rollover (every 1024 weeks: 1999, 2019, 2038), reports dates
years in the past. A date before ``not_before`` (the software's build date
unless configured) is flagged and the epoch becomes a NoFix: a position with a
wrong time would be stored at the wrong place in the vehicle's history.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.gps.nmea_parser import Gga, Gsa, Gsv, Rmc, Sentence, Vtg, Zda

_MS_PER_DAY = 86_400_000
_LEARN_FROM = 4  # bursts whose common sentence types make a burst complete
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# No fix can be older than the software reading it. Raise this with each
# release (it is the "build date" of the date sanity check).
BUILD_DATE = date(2024, 1, 1)
GPS_WEEK_ROLLOVER = timedelta(weeks=1024)
DATE_ROLLOVER = "date_rollover"  # 1024 weeks behind the system date: a rollover bug
DATE_BEFORE_BUILD = "date_before_build"  # just wrong (RTC battery, cold start)


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


def date_problem(day: date, not_before: date, today: date | None = None) -> str | None:
    """Why a receiver date cannot be trusted, or None when it can.

    A date exactly 1024 (or 2048) weeks behind the system's date (when that
    is plausible itself) is a week-rollover bug; anything else before
    ``not_before`` is just wrong.
    """
    if day >= not_before:
        return None
    today = today or datetime.now(UTC).date()
    if today >= not_before:
        for k in (1, 2):
            if abs((day + k * GPS_WEEK_ROLLOVER - today).days) <= 1:
                return DATE_ROLLOVER
    return DATE_BEFORE_BUILD


class EpochAssembler:
    def __init__(self, not_before: date | None = None) -> None:
        self._not_before = not_before or BUILD_DATE
        self.date_flags: Counter[str] = Counter()  # epochs refused for their date, by reason
        self.in_view: dict[str, int] = {}  # satellites in view per constellation (GSV)
        self.zda_day: date | None = None
        self._burst: _Burst | None = None
        self._expected: frozenset[str] = frozenset({"RMC", "GGA"})
        self._recent: list[frozenset[str]] = []
        self.without_rmc = 0  # bursts lost because their RMC was missing or corrupt

    @property
    def sats_in_view(self) -> int | None:
        return sum(self.in_view.values()) if self.in_view else None

    def add(self, s: Sentence) -> list[GpsReading]:
        out: list[GpsReading] = []
        if isinstance(s, Gsv):
            if s.msg_num == 1 and s.in_view is not None:
                self.in_view[s.talker] = s.in_view
            return out
        if isinstance(s, Zda):
            self.zda_day = s.day
            return out
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
        problem = date_problem(rmc.day, self._not_before) if rmc.day is not None else None
        if problem is not None:
            self.date_flags[problem] += 1
            return [NoFix(None, problem)]
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
