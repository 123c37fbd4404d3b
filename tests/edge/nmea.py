"""Build NMEA sentences with correct checksums, as a receiver would print them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce


def checksum(body: str) -> int:
    return reduce(lambda acc, ch: acc ^ ord(ch), body, 0)


def sentence(body: str) -> bytes:
    """``GPRMC,...`` -> ``$GPRMC,...*HH\\r\\n``."""
    return f"${body}*{checksum(body):02X}\r\n".encode()


def _dm(value: float, width: int) -> str:
    deg = int(abs(value))
    minutes = (abs(value) - deg) * 60
    return f"{deg:0{width}d}{minutes:07.4f}"


def lat_fields(lat: float) -> str:
    return f"{_dm(lat, 2)},{'N' if lat >= 0 else 'S'}"


def lon_fields(lon: float) -> str:
    return f"{_dm(lon, 3)},{'E' if lon >= 0 else 'W'}"


def hhmmss(t: datetime) -> str:
    return t.strftime("%H%M%S.") + f"{t.microsecond // 10000:02d}"


def rmc(
    t: datetime,
    lat: float,
    lon: float,
    *,
    knots: float = 10.0,
    course: float = 90.0,
    talker: str = "GN",
    valid: bool = True,
) -> bytes:
    status, mode = ("A", "A") if valid else ("V", "N")
    pos = f"{lat_fields(lat)},{lon_fields(lon)}" if valid else ",,,"
    return sentence(
        f"{talker}RMC,{hhmmss(t)},{status},{pos},{knots:.3f},{course:.2f},"
        f"{t.strftime('%d%m%y')},,,{mode}"
    )


def gga(
    t: datetime,
    lat: float,
    lon: float,
    *,
    quality: int = 1,
    sats: int = 9,
    hdop: float = 0.9,
    alt: float = 545.4,
    talker: str = "GN",
) -> bytes:
    return sentence(
        f"{talker}GGA,{hhmmss(t)},{lat_fields(lat)},{lon_fields(lon)},{quality},{sats:02d},"
        f"{hdop},{alt},M,46.9,M,,"
    )


def vtg(course: float, kmh: float, *, talker: str = "GN") -> bytes:
    return sentence(f"{talker}VTG,{course:.2f},T,,M,{kmh / 1.852:.3f},N,{kmh:.3f},K,A")


def gsa(fix_type: int = 3, hdop: float = 0.9, *, talker: str = "GN") -> bytes:
    return sentence(f"{talker}GSA,A,{fix_type},04,05,09,12,24,,,,,,,,1.8,{hdop},1.5")


def epoch(
    t: datetime,
    lat: float,
    lon: float,
    *,
    kmh: float = 36.0,
    course: float = 90.0,
    talker: str = "GN",
) -> bytes:
    """One u-blox style burst: RMC, VTG, GGA, GSA."""
    return (
        rmc(t, lat, lon, knots=kmh / 1.852, course=course, talker=talker)
        + vtg(course, kmh, talker=talker)
        + gga(t, lat, lon, talker=talker)
        + gsa(talker=talker)
    )


def track(start: datetime, n: int, lat: float = 48.1, lon: float = 11.5) -> list[bytes]:
    """n bursts one second apart, moving ~11 m east each second."""
    return [epoch(start + timedelta(seconds=i), lat, lon + i * 0.00015) for i in range(n)]


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
