"""What the GPS source yields: a position fix, or the explicit absence of one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleet_wire import Engine


@dataclass(frozen=True, slots=True)
class GpsFix:
    """One receiver epoch with a valid position. Units match the wire contract."""

    t: int  # UTC milliseconds (RMC date + time)
    lat: float  # degrees, 6 decimals (~0.1 m)
    lon: float
    speed_kmh: float | None = None
    course_deg: float | None = None  # course over ground, true north
    alt_m: float | None = None  # above mean sea level
    hdop: float | None = None
    sats: int | None = None  # satellites used in the solution
    fix_type: Literal[2, 3] | None = None
    eng: Engine | None = None  # latest OBD values when the fix was taken (the agent adds them)


@dataclass(frozen=True, slots=True)
class NoFix:
    """The receiver is talking but has no usable position.

    Kept distinct from a fix so that nothing downstream can mistake it for a
    position at 0,0.
    """

    t: int | None  # receiver time when it knows it, UTC ms
    reason: str  # rmc_void, gga_no_fix, gsa_no_fix, no_position, zero_position, no_time...


GpsReading = GpsFix | NoFix
