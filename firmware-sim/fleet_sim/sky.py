"""Which satellites a simulated receiver sees, for GSA and GSV.

The route model only decides *how many* satellites are used; this fills in
plausible ids, elevations, azimuths and signal strengths that drift slowly, so
GSV looks like a real sky and the ids used in GSA are the highest ones in it.
It is deterministic in (seed, time) and keeps no state.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# NMEA satellite id ranges by talker (NMEA 0183 4.10 numbering).
PRN_RANGES: dict[str, tuple[int, int]] = {
    "GP": (1, 32),  # GPS
    "GL": (65, 96),  # GLONASS
    "GA": (1, 36),  # Galileo
    "GB": (1, 63),  # BeiDou
    "BD": (1, 63),  # BeiDou, older talker id
}
# Satellites above the horizon per system at any time, roughly.
POOL_SIZE = 12


@dataclass(frozen=True, slots=True)
class Sat:
    system: str  # talker id of its constellation, e.g. "GP"
    prn: int
    elev: int  # degrees above the horizon
    az: int  # degrees from north
    snr: int | None  # dB-Hz; None when the receiver is not tracking it
    used: bool  # used in the fix (listed in GSA)


def systems_for(talker: str) -> tuple[str, ...]:
    """Constellations behind a talker id: GN is a multi-GNSS receiver (GPS + GLONASS)."""
    if talker == "GN":
        return ("GP", "GL")
    return (talker,)


@dataclass(frozen=True, slots=True)
class _Orbit:
    system: str
    prn: int
    elev0: float
    swing: float
    az0: float
    phase: float


class Sky:
    def __init__(self, seed: int, systems: tuple[str, ...] = ("GP",)) -> None:
        rng = random.Random(f"fleet-sim/sky/{seed}")
        self._orbits: list[_Orbit] = []
        for system in systems:
            lo, hi = PRN_RANGES.get(system, (1, 32))
            for prn in rng.sample(range(lo, hi + 1), min(POOL_SIZE, hi - lo + 1)):
                self._orbits.append(
                    _Orbit(
                        system,
                        prn,
                        elev0=rng.uniform(8.0, 80.0),
                        swing=rng.uniform(3.0, 12.0),
                        az0=rng.uniform(0.0, 360.0),
                        phase=rng.uniform(0.0, 2 * math.pi),
                    )
                )

    def view(self, t_ms: int, used: int) -> list[Sat]:
        """Satellites in view at t_ms, the ``used`` highest of them used in the fix."""
        hours = t_ms / 3_600_000.0
        sky: list[tuple[float, float, _Orbit]] = []
        for o in self._orbits:
            # A satellite crosses the sky in hours; over a drive it mostly creeps.
            elev = o.elev0 + o.swing * math.sin(hours * 0.5 + o.phase)
            az = (o.az0 + 15.0 * hours) % 360.0
            sky.append((elev, az, o))
        sky.sort(key=lambda s: -s[0])
        in_view = min(len(sky), max(used + 3, 4))
        out: list[Sat] = []
        for i, (elev, az, o) in enumerate(sky[:in_view]):
            is_used = i < used
            # Higher satellites are stronger; a flicker keeps the numbers alive.
            snr = int(
                16 + 30 * math.sin(math.radians(max(elev, 1.0))) + 2 * math.sin(hours * 900 + o.prn)
            )
            out.append(
                Sat(
                    o.system,
                    o.prn,
                    round(elev),
                    round(az) % 360,
                    snr if is_used or snr >= 20 else None,
                    is_used,
                )
            )
        return out
