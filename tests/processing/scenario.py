"""One recorded drive that exercises every fix-derived event type, and its geofences.

Used by the event tests and the late-data equivalence test, so both look at
the same, explainable data.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from tests.processing.drives import Drive, build

PLAN: list[tuple[str, float]] = [
    ("drive", 1500),
    ("idle", 420),  # engine on, standing: idling after 5 min
    ("park", 2400),  # ignition off: trip ends, stop; battery sags, fuel theft
    ("drive", 1800),
    ("park", 900),
    ("drive", 1200),
    ("park", 1800),
    ("drive", 1500),  # ends past 2 h 20 min: a 2-hour hole fits inside the drive
]


def scenario_drive(seed: int = 7) -> Drive:
    d = build(PLAN, seed=seed)
    fx = d.fixes
    drive1_end = d.drives[0][1]
    park_start = drive1_end + 420_000
    # A harsh stop and launch in the first drive: one fix at 0 km/h between fast ones.
    # Fixes at 0 km/h between two at >= 60 (10 s apart): 3 s after the first is
    # >= 5.5 m/s² braking, 2 s before the second a >= 8 m/s² launch (the
    # simulated driver itself never brakes harder than 3.5 or launches harder than 2.3).
    fast = [i for i, f in enumerate(fx) if f["spd"] >= 60 and fx[i + 2]["spd"] >= 60 and i > 10]
    brake, launch = fast[0], next(i for i in fast if i > fast[0] + 50)
    fx[brake + 1].update(spd=0.0, t=fx[brake]["t"] + 3000)
    fx[launch + 1].update(spd=0.0, t=fx[launch]["t"] + 8000)
    for f in fx:
        t, eng = f["t"], f["eng"]
        if park_start + 600_000 <= t < park_start + 900_000:
            eng["vbat"] = 11.2  # battery sags while parked
        if t >= park_start + 1_200_000 and t < d.drives[1][0]:
            eng["fuel"] = eng["fuel"] - 25.0  # fuel theft at the kerb
        if t >= d.drives[1][0]:
            eng["fuel"] = 95.0  # ...and a refuel before the second drive
        if d.drives[1][0] + 300_000 <= t < d.drives[1][0] + 360_000:
            eng["ect"] = 116.0
        if t >= d.drives[1][0] + 600_000:
            eng["dtc"] = ["P0301"]
    return d


def geofences_for(d: Drive) -> list[dict[str, Any]]:
    """A depot polygon around the parking spot, a circle the first drive passes
    through, and a slow corridor on part of the second drive."""
    fx = d.fixes
    park = next(f for f in fx if f["t"] > d.drives[0][1] + 420_000)
    plat, plon = park["lat"], park["lon"]
    s = 0.002  # ~220 m north-south, ~135 m east-west
    depot = {
        "type": "Polygon",
        "coordinates": [
            [[plon - s, plat - s], [plon + s, plat - s], [plon + s, plat + s],
             [plon - s, plat + s], [plon - s, plat - s]],
        ],
    }  # fmt: skip
    mid = fx[len([f for f in fx if f["t"] < d.drives[0][0] + 600_000])]
    second = [f for f in fx if d.drives[1][0] <= f["t"] <= d.drives[1][1]]
    corridor = [[f["lon"], f["lat"]] for f in second[40:120:8]]
    return [
        {"name": "Depot", "kind": "polygon", "geometry": depot, "dwell_alert_s": 600},
        {"name": "Customer", "kind": "circle", "radius_m": 150.0,
         "geometry": {"type": "Point", "coordinates": [mid["lon"], mid["lat"]]}},
        {"name": "School zone", "kind": "corridor", "width_m": 60.0, "speed_limit_kmh": 30,
         "geometry": {"type": "LineString", "coordinates": corridor}},
    ]  # fmt: skip


RULES: dict[str, dict[str, Any]] = {
    "overspeed": {"limit_kmh": 70, "min_duration_s": 10},
    "maintenance_due": {"every_km": 10},
}


async def configure(conn: asyncpg.Connection, tenant_id: int, d: Drive) -> list[int]:
    ids = []
    for g in geofences_for(d):
        ids.append(
            await conn.fetchval(
                """INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m, width_m,
                                          speed_limit_kmh, dwell_alert_s)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
                tenant_id,
                g["name"],
                g["kind"],
                g["geometry"],
                g.get("radius_m"),
                g.get("width_m"),
                g.get("speed_limit_kmh"),
                g.get("dwell_alert_s"),
            )
        )
    for rule, params in RULES.items():
        await conn.execute(
            "INSERT INTO event_rules (tenant_id, type, params) VALUES ($1, $2, $3)",
            tenant_id,
            rule,
            params,
        )
    return ids


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """Events as (type, rule_key, fix seq, fix time): independent of device and delivery."""
    out = []
    for e in events:
        seq = int(str(e["fix_key"]).rsplit(":", 1)[1])
        out.append((e["type"], e["rule_key"], seq, int(e["fix_time"].timestamp() * 1000)))
    return sorted(out)


__all__ = ["RULES", "configure", "geofences_for", "orjson", "scenario_drive", "summary"]
