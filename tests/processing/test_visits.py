"""Planned visits on a recorded drive: arrived / in progress / completed / skipped /
failed, route deviation, ETA; the same outcome when part of the drive arrives late."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from fleet_cloud.processing.service import Processor
from fleet_cloud.store import ms_to_dt
from fleet_sim.geo import haversine_m, offset
from tests.processing.conftest import drain, events_of, new_vehicle, store
from tests.processing.drives import Drive, build
from tests.processing.scenario import summary

PLAN: list[tuple[str, float]] = [
    ("drive", 600), ("park", 900), ("drive", 900), ("park", 900), ("drive", 600),
]  # fmt: skip


def park_spot(d: Drive, n: int) -> dict[str, Any]:
    """The first fix of the n-th parking (after the n-th drive)."""
    end = d.drives[n][1]
    return next(f for f in d.fixes if f["t"] > end)


async def make_route(pool: asyncpg.Pool, tid: int, vid: int, d: Drive) -> dict[str, int]:
    t0, t_end = d.fixes[0]["t"], d.fixes[-1]["t"]
    a, c = park_spot(d, 0), park_spot(d, 1)
    far = offset(a["lat"], a["lon"], 20_000, 45)
    stops = [
        ("A", a["lat"], a["lon"], None),
        ("B", far[0], far[1], None),  # never visited: skipped once C is reached
        ("C", c["lat"], c["lon"], None),
        ("D", far[0] + 0.01, far[1], t0 + 15 * 60_000),  # window ends first: failed
    ]
    rid = await pool.fetchval(
        """INSERT INTO routes (tenant_id, vehicle_id, name, planned_start, planned_end)
           VALUES ($1, $2, 'Morning round', $3, $4) RETURNING id""",
        tid, vid, ms_to_dt(t0), ms_to_dt(t_end + 3_600_000),
    )  # fmt: skip
    ids = {}
    for i, (name, lat, lon, wend) in enumerate(stops):
        ids[name] = await pool.fetchval(
            """INSERT INTO route_stops (route_id, seq, name, lat, lon, window_end, share_token)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            rid, i + 1, name, lat, lon, ms_to_dt(wend) if wend else None,
            secrets.token_urlsafe(18),
        )  # fmt: skip
    return ids


async def stop_rows(pool: asyncpg.Pool, ids: dict[str, int]) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM route_stops WHERE id = ANY($1::bigint[])", list(ids.values())
    )
    by_id = {r["id"]: dict(r) for r in rows}
    return {name: by_id[i] for name, i in ids.items()}


async def test_visit_lifecycle(pool: asyncpg.Pool, processor: Processor) -> None:
    d = build(PLAN, seed=5)
    tid, vid, dev = await new_vehicle(pool)
    ids = await make_route(pool, tid, vid, d)
    second_drive = d.drives[1][0]
    first_part = [f for f in d.fixes if f["t"] < second_drive + 300_000]
    for i in range(0, len(first_part), 50):
        await store(pool, dev, vid, first_part[i : i + 50])
        await drain(processor)
    mid = await stop_rows(pool, ids)
    assert mid["A"]["status"] == "completed"
    assert mid["B"]["status"] == "planned" and mid["B"]["eta"] is not None
    assert mid["B"]["eta"].timestamp() * 1000 > first_part[-1]["t"]
    assert mid["D"]["status"] == "failed"

    rest = d.fixes[len(first_part) :]
    for i in range(0, len(rest), 50):
        await store(pool, dev, vid, rest[i : i + 50])
        await drain(processor)
    final = await stop_rows(pool, ids)
    assert [final[k]["status"] for k in "ABCD"] == ["completed", "skipped", "completed", "failed"]
    a, c = final["A"], final["C"]
    # Arrival is the first fix 10 m (hysteresis) inside the 75 m circle: the
    # vehicle rolls in, stands at the light there, then parks.
    spot = park_spot(d, 0)
    first_in = next(
        f for f in d.fixes if haversine_m(f["lat"], f["lon"], spot["lat"], spot["lon"]) <= 65.0
    )
    assert a["arrived_at"].timestamp() * 1000 == first_in["t"]
    assert a["departed_at"] > a["arrived_at"] and c["departed_at"] > c["arrived_at"]
    assert all(final[k]["eta"] is None for k in "ABCD")

    evs = await events_of(pool, vid)
    visit = [(e["type"], e["details"].get("stop")) for e in evs if e["type"].startswith("visit_")]
    assert ("visit_arrived", "A") in visit and ("visit_completed", "A") in visit
    assert ("visit_skipped", "B") in visit and ("visit_failed", "D") in visit
    assert ("visit_arrived", "C") in visit and ("visit_completed", "C") in visit
    assert any(e["type"] == "route_deviation" for e in evs)

    # The same drive with its middle delivered last: same visits, same events.
    tid2, vid2, dev2 = await new_vehicle(pool)
    ids2 = await make_route(pool, tid2, vid2, d)
    h0, h1 = d.drives[0][1], d.drives[2][0]
    order = [f for f in d.fixes if not h0 <= f["t"] < h1] + [
        f for f in d.fixes if h0 <= f["t"] < h1
    ]
    for i in range(0, len(order), 50):
        await store(pool, dev2, vid2, order[i : i + 50])
        await drain(processor)
    final2 = await stop_rows(pool, ids2)
    for k in "ABCD":
        for col in ("status", "arrived_at", "departed_at"):
            assert final2[k][col] == final[k][col], (k, col)
    assert normalised(await events_of(pool, vid2)) == normalised(evs)


def normalised(evs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Events with route/stop ids replaced by names (two vehicles, two routes)."""
    out = []
    for t, key, seq, ms, e in sorted(
        (*s, e) for s, e in zip(summary(evs), sorted(evs, key=_order), strict=True)
    ):
        if t.startswith("visit_") or t == "route_deviation":
            key = e["details"].get("stop", "route")
        out.append((t, key, seq, ms))
    return sorted(out)


def _order(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["type"], e["rule_key"], int(e["fix_key"].rsplit(":", 1)[1]), e["fix_time"])
