"""NMEA 0183 sentences as a GNSS receiver emits them (NMEA 2.3 field layout).

Builders return one sentence as text, ``$`` through checksum, without the
CR LF; ``frame`` joins an epoch into the bytes that go on the wire.

Formats follow what common receivers (u-blox, MediaTek) print, because that is
what the agent's reader meets in a vehicle:

- time ``hhmmss.ss`` (centiseconds), date ``ddmmyy``;
- latitude ``ddmm.mmmmm``, longitude ``dddmm.mmmmm`` (about 2 cm resolution);
- speed in knots (RMC, VTG) and km/h (VTG) with 3 decimals, course with 2;
- without a fix: RMC status ``V`` with empty position, GGA quality 0, VTG
  empty with mode ``N``, GSA fix type 1 with DOPs of 99.99, GSV still listing
  what is in view, time and date still present (a receiver keeps time from its
  RTC and the satellites it hears).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from fleet_sim.route import SimFix
from fleet_sim.sky import Sat

KNOTS_PER_KMH = 1 / 1.852
# Height of the geoid above the WGS84 ellipsoid around Berlin (EGM96), metres.
GEOID_SEPARATION_M = 39.6
NO_DOP = "99.99"


def checksum(body: str) -> str:
    """XOR of the characters between ``$`` and ``*``, as two upper-case hex digits."""
    x = 0
    for b in body.encode("ascii"):
        x ^= b
    return f"{x:02X}"


def sentence(talker: str, kind: str, fields: Iterable[str]) -> str:
    body = ",".join((talker + kind, *fields))
    return f"${body}*{checksum(body)}"


def frame(lines: Iterable[str]) -> bytes:
    """Sentences as they go down the serial line, each ended by CR LF."""
    return b"".join(line.encode("ascii") + b"\r\n" for line in lines)


# -- fields ------------------------------------------------------------------


def _utc(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000.0, tz=UTC)


def time_field(t_ms: int) -> str:
    """``hhmmss.ss``: centiseconds, truncated like a receiver's clock."""
    day_ms = t_ms % 86_400_000
    h, rem = divmod(day_ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}{m:02d}{s:02d}.{ms // 10:02d}"


def date_field(t_ms: int) -> str:
    return _utc(t_ms).strftime("%d%m%y")


def _dm(value: float, deg_digits: int) -> str:
    # Whole units of 1e-5 minute, so rounding can never print "60.00000" minutes.
    units = round(abs(value) * 60 * 100_000)
    deg, minute_units = divmod(units, 60 * 100_000)
    whole, frac = divmod(minute_units, 100_000)
    return f"{deg:0{deg_digits}d}{whole:02d}.{frac:05d}"


def lat_field(lat: float) -> tuple[str, str]:
    """Latitude as (``ddmm.mmmmm``, ``N``/``S``)."""
    return _dm(lat, 2), "N" if lat >= 0 else "S"


def lon_field(lon: float) -> tuple[str, str]:
    """Longitude as (``dddmm.mmmmm``, ``E``/``W``)."""
    return _dm(lon, 3), "E" if lon >= 0 else "W"


def parse_coord(value: str, hemi: str) -> float:
    """Degrees back from a ``(d)ddmm.mmmmm`` field, the way a reader computes them."""
    dot = value.index(".")
    deg = float(value[: dot - 2])
    minutes = float(value[dot - 2 :])
    sd = deg + minutes / 60
    return -sd if hemi in ("S", "W") else sd


def speed_fields(speed_kmh: float) -> tuple[str, str]:
    """Speed as (knots, km/h) text."""
    return f"{speed_kmh * KNOTS_PER_KMH:.3f}", f"{speed_kmh:.3f}"


def course_field(heading_deg: float) -> str:
    c = round(heading_deg % 360.0, 2)
    return f"{0.0 if c >= 360.0 else c:.2f}"


def _dop(hdop: float) -> tuple[str, str, str]:
    """(PDOP, HDOP, VDOP): receivers report all three; the others follow HDOP."""
    return f"{hdop * 1.7:.2f}", f"{hdop:.2f}", f"{hdop * 1.35:.2f}"


# -- sentences ---------------------------------------------------------------


def rmc(fix: SimFix, talker: str = "GP") -> str:
    """Recommended minimum: time, status, position, speed (knots), course, date, mode."""
    t, d = time_field(fix.t_ms), date_field(fix.t_ms)
    if not fix.fix_type:
        return sentence(talker, "RMC", (t, "V", "", "", "", "", "", "", d, "", "", "N"))
    lat, ns = lat_field(fix.lat)
    lon, ew = lon_field(fix.lon)
    knots, _ = speed_fields(fix.speed_kmh)
    return sentence(
        talker,
        "RMC",
        (t, "A", lat, ns, lon, ew, knots, course_field(fix.heading_deg), d, "", "", "A"),
    )


def gga(fix: SimFix, talker: str = "GP") -> str:
    """Fix data: time, position, quality, satellites used, HDOP, altitude, geoid separation."""
    t = time_field(fix.t_ms)
    if not fix.fix_type:
        return sentence(
            talker, "GGA", (t, "", "", "", "", "0", "00", NO_DOP, "", "", "", "", "", "")
        )
    lat, ns = lat_field(fix.lat)
    lon, ew = lon_field(fix.lon)
    return sentence(
        talker,
        "GGA",
        (
            t,
            lat,
            ns,
            lon,
            ew,
            "1",  # autonomous GNSS fix
            f"{min(fix.sats, 99):02d}",
            f"{fix.hdop:.2f}",
            f"{fix.alt_m:.1f}",
            "M",
            f"{GEOID_SEPARATION_M:.1f}",
            "M",
            "",
            "",
        ),
    )


def vtg(fix: SimFix, talker: str = "GP") -> str:
    """Course and speed over ground (true course, magnetic left empty, knots, km/h, mode)."""
    if not fix.fix_type:
        return sentence(talker, "VTG", ("", "", "", "", "", "", "", "", "N"))
    knots, kmh = speed_fields(fix.speed_kmh)
    return sentence(
        talker, "VTG", (course_field(fix.heading_deg), "T", "", "M", knots, "N", kmh, "K", "A")
    )


def gsa(fix: SimFix, sats: list[Sat], talker: str = "GP") -> list[str]:
    """DOP and satellites used: one sentence per constellation (as multi-GNSS receivers do)."""
    fix_field = str(fix.fix_type) if fix.fix_type in (2, 3) else "1"
    dops = _dop(fix.hdop) if fix.fix_type else (NO_DOP, NO_DOP, NO_DOP)
    systems = list(dict.fromkeys(s.system for s in sats)) or [talker]
    out: list[str] = []
    for system in systems:
        ids = [f"{s.prn:02d}" for s in sats if s.used and s.system == system][:12]
        ids += [""] * (12 - len(ids))
        out.append(sentence(talker, "GSA", ("A", fix_field, *ids, *dops)))
    return out


def gsv(sats: list[Sat]) -> list[str]:
    """Satellites in view, four per sentence, under each constellation's own talker."""
    out: list[str] = []
    for system in dict.fromkeys(s.system for s in sats):
        mine = [s for s in sats if s.system == system]
        total = (len(mine) + 3) // 4
        for i in range(total):
            fields = [str(total), str(i + 1), f"{len(mine):02d}"]
            for s in mine[i * 4 : i * 4 + 4]:
                fields += [
                    f"{s.prn:02d}",
                    f"{s.elev:02d}",
                    f"{s.az:03d}",
                    "" if s.snr is None else f"{s.snr:02d}",
                ]
            out.append(sentence(system, "GSV", fields))
    return out


def zda(t_ms: int, talker: str = "GP") -> str:
    """Time and date with a four-digit year; local zone fields are zero (UTC)."""
    u = _utc(t_ms)
    return sentence(
        talker,
        "ZDA",
        (time_field(t_ms), f"{u.day:02d}", f"{u.month:02d}", f"{u.year:04d}", "00", "00"),
    )


def epoch(fix: SimFix, sats: list[Sat], talker: str = "GP", *, full: bool = True) -> list[str]:
    """One epoch in u-blox order. ``full`` adds GSV and ZDA, which receivers
    running faster than 1 Hz usually send once a second only."""
    lines = [rmc(fix, talker), vtg(fix, talker), gga(fix, talker), *gsa(fix, sats, talker)]
    if full:
        lines += gsv(sats)
        lines.append(zda(fix.t_ms, talker))
    return lines
