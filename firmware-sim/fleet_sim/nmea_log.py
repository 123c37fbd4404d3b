"""Write the GPS simulator's NMEA to a file instead of a pty: a log for gpsfake.

gpsfake (gpsd-clients) replays a log through a real gpsd, so the agent's gpsd
source is tested with the same route, sentences and faults as its serial
source. The epochs are the ones ``fleet-sim gps`` would write with the same
seed, rate and route start (``--route-start``, default: now).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from fleet_sim import nmea
from fleet_sim.faults import FaultInjector
from fleet_sim.route import NO_FIX_HDOP, RouteSim
from fleet_sim.sky import Sky, systems_for


def write_nmea_log(
    path: Path,
    seconds: float,
    *,
    seed: int = 1,
    hz: int = 1,
    talker: str = "GP",
    route_start_ms: int | None = None,
    no_fix: bool = False,
    bad_checksum_rate: float = 0.0,
    garbage_rate: float = 0.0,
) -> int:
    """Write ``seconds`` of epochs; returns how many epochs were written."""
    route = RouteSim(seed, hz, route_start_ms)
    sky = Sky(seed, systems_for(talker))
    faults = FaultInjector(
        random.Random(f"fleet-sim/faults/{seed}"), bad_checksum_rate, garbage_rate
    )
    n = int(seconds * hz)
    last_second = -1
    with open(path, "wb") as f:
        for _ in range(n):
            fix = route.step()
            if no_fix:
                fix = dataclasses.replace(fix, fix_type=0, sats=0, hdop=NO_FIX_HDOP)
            second = fix.t_ms // 1000
            lines = nmea.epoch(
                fix, sky.view(fix.t_ms, fix.sats), talker, full=second != last_second
            )
            last_second = second
            f.write(faults.apply(lines).data)
    return n
