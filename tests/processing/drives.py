"""Recorded drives with known ground truth, built from fleet_sim.route.RouteSim.

A plan is a list of phases: ("drive", s) steps the simulator; ("park", s)
stands still with the ignition off; ("idle", s) stands still with the engine
running. Fix times run on without gaps, except ("gap", s), where the device
records nothing. The ground truth is which phases were trips.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from fleet_sim.route import RouteSim

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Drive:
    fixes: list[dict[str, Any]] = field(default_factory=list)
    # (start_ms, end_ms, distance_m) of each driving phase, as the sim drove it
    drives: list[tuple[int, int, float]] = field(default_factory=list)


def build(
    plan: list[tuple[str, float]],
    seed: int = 1,
    start_ms: int = T0,
    drive_every_s: float = 5.0,
    park_every_s: float = 60.0,
) -> Drive:
    sim = RouteSim(seed, hz=1.0 / drive_every_s, start_ms=start_ms, outages=False)
    out = Drive()
    t = start_ms
    seq = 0
    lat, lon = sim.frame.lat0, sim.frame.lon0
    fuel = 80.0
    rng = random.Random(seed)
    sim_offset = 0  # fix time minus sim time: grows with every stationary phase

    def add(t_ms: int, la: float, lo: float, spd: float, ign: bool, **eng: Any) -> None:
        nonlocal seq
        seq += 1
        out.fixes.append(
            {
                "seq": seq,
                "t": t_ms,
                "lat": la,
                "lon": lo,
                "spd": round(spd, 2),
                "eng": {
                    "ign": ign,
                    "vbat": 13.9 if ign else 12.6,
                    "ect": 88.0,
                    "fuel": fuel,
                    # mass air flow, g/s: ~2.5 at idle, more with speed, none when off
                    "maf": round(2.5 + 0.12 * spd, 2) if ign else 0.0,
                    **eng,
                },
            }
        )

    for kind, secs in plan:
        if kind == "drive":
            start = t
            dist = 0.0
            n = math.ceil(secs / drive_every_s)
            v_prev = 0.0
            k = 0
            # Drive at least secs, then on until the vehicle stands (a light):
            # a phase never ends at speed, so no step change fakes a harsh event.
            while k < n or v_prev > 0.5:
                k += 1
                f = sim.step()
                t = f.t_ms + sim_offset
                dist += (v_prev + f.speed_kmh) / 2 / 3.6 * drive_every_s
                v_prev = f.speed_kmh
                lat, lon = f.lat, f.lon
                fuel = max(5.0, fuel - 0.002)
                add(t, lat, lon, f.speed_kmh, True)
            out.drives.append((start, t, dist))
        elif kind in ("park", "idle"):
            every = park_every_s if kind == "park" else drive_every_s
            n = math.ceil(secs / every)
            for _ in range(n):
                t += int(every * 1000)
                jitter = rng.gauss(0, 1.5) / 111_000.0
                add(t, lat + jitter, lon + jitter, 0.0, kind == "idle")
            sim_offset = t - sim.next_t_ms + int(drive_every_s * 1000)
        elif kind == "gap":
            t += int(secs * 1000)
            sim_offset = t - sim.next_t_ms + int(drive_every_s * 1000)
        else:
            raise ValueError(kind)
    return out
