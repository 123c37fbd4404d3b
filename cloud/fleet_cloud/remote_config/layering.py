"""From layers to one device's desired document.

Order, weakest first: the tenant layer; the fleet layers from the root of the
device's fleet tree down to its own fleet (the nearest fleet wins), each
followed by the changes of that fleet's rollout while it applies to this
device; the device's own layer. A later layer wins per key.

A staged rollout's changes sit right after its fleet's layer (not on top of
everything) so that while it runs a device resolves exactly as it will once
the changes are merged into that fleet layer: a sub-fleet or a device that
overrides a key keeps its override during the rollout and after it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

Doc = dict[str, Any]
ACTIVE_STATES = ("canary", "waiting", "proceeding")


@dataclass
class Chain:
    """Everything one device's document is made of."""

    device_id: str
    tenant_id: int
    fleet_path: list[int]  # root first, the device's own fleet last ([] without a fleet)
    tenant: Doc = field(default_factory=dict)
    fleets: dict[int, Doc] = field(default_factory=dict)
    staged: dict[int, list[Doc]] = field(default_factory=dict)  # fleet -> active rollout changes
    device: Doc = field(default_factory=dict)


def merge(layers: Iterable[Doc]) -> Doc:
    out: Doc = {}
    for layer in layers:
        out.update(layer)
    return out


def resolve(chain: Chain, extra: tuple[int, Doc] | None = None) -> Doc:
    """The device's document; ``extra`` = (fleet, changes) staged as if already active."""
    layers: list[Doc] = [chain.tenant]
    for fid in chain.fleet_path:
        layers.append(chain.fleets.get(fid, {}))
        layers.extend(chain.staged.get(fid, []))
        if extra is not None and extra[0] == fid:
            layers.append(extra[1])
    layers.append(chain.device)
    return merge(layers)


def fleet_path(parents: dict[int, int | None], fleet_id: int | None) -> list[int]:
    """Root-first ancestry of a fleet; a cycle in parent links is cut where it closes."""
    path: list[int] = []
    seen: set[int] = set()
    cur = fleet_id
    while cur is not None and cur not in seen:
        seen.add(cur)
        path.append(cur)
        cur = parents.get(cur)
    return path[::-1]


async def chains(conn: asyncpg.Connection, device_ids: list[str]) -> dict[str, Chain]:
    """Chains of the given devices (unknown ids are left out)."""
    devs = await conn.fetch(
        """SELECT d.device_id, d.tenant_id, v.fleet_id FROM devices d
           LEFT JOIN vehicles v ON v.id = d.vehicle_id WHERE d.device_id = ANY($1::text[])""",
        device_ids,
    )
    if not devs:
        return {}
    tenants = sorted({r["tenant_id"] for r in devs})
    parents: dict[int, int | None] = {
        r["id"]: r["parent_id"]
        for r in await conn.fetch(
            "SELECT id, parent_id FROM fleets WHERE tenant_id = ANY($1::bigint[])", tenants
        )
    }
    out = {
        r["device_id"]: Chain(r["device_id"], r["tenant_id"], fleet_path(parents, r["fleet_id"]))
        for r in devs
    }
    layers = await conn.fetch(
        """SELECT scope, tenant_id, fleet_id, device_id, document FROM config_layers
           WHERE tenant_id = ANY($1::bigint[])
             AND (scope <> 'device' OR device_id = ANY($2::text[]))""",
        tenants,
        device_ids,
    )
    tenant_docs: dict[int, Doc] = {}
    fleet_docs: dict[int, Doc] = {}
    for r in layers:
        if r["scope"] == "tenant":
            tenant_docs[r["tenant_id"]] = r["document"]
        elif r["scope"] == "fleet":
            fleet_docs[r["fleet_id"]] = r["document"]
        elif r["device_id"] in out:
            out[r["device_id"]].device = r["document"]
    # A rollout applies to its canaries while canary/waiting, to every member while proceeding.
    staged: dict[str, dict[int, list[Doc]]] = defaultdict(lambda: defaultdict(list))
    for r in await conn.fetch(
        """SELECT m.device_id, r.fleet_id, r.changes FROM config_rollouts r
           JOIN config_rollout_members m ON m.rollout_id = r.id
           WHERE m.device_id = ANY($1::text[]) AND m.result IS DISTINCT FROM 'unchanged'
             AND (r.state = 'proceeding' OR (r.state IN ('canary', 'waiting')
                                             AND m.phase = 'canary'))
           ORDER BY r.id""",
        device_ids,
    ):
        staged[r["device_id"]][r["fleet_id"]].append(r["changes"])
    for dev_id, chain in out.items():
        chain.tenant = tenant_docs.get(chain.tenant_id, {})
        chain.fleets = {f: fleet_docs[f] for f in chain.fleet_path if f in fleet_docs}
        chain.staged = dict(staged.get(dev_id, {}))
    return out


async def fleet_subtree(conn: asyncpg.Connection, fleet_id: int) -> list[int]:
    rows = await conn.fetch(
        """WITH RECURSIVE sub(id) AS (
               SELECT $1::bigint
               UNION SELECT f.id FROM fleets f JOIN sub ON f.parent_id = sub.id)
           SELECT id FROM sub""",
        fleet_id,
    )
    return [r["id"] for r in rows]


async def devices_in_fleet(conn: asyncpg.Connection, fleet_id: int) -> list[str]:
    """Devices of the fleet and of every fleet below it."""
    rows = await conn.fetch(
        """SELECT d.device_id FROM devices d JOIN vehicles v ON v.id = d.vehicle_id
           WHERE v.fleet_id = ANY($1::bigint[]) ORDER BY d.device_id""",
        await fleet_subtree(conn, fleet_id),
    )
    return [r["device_id"] for r in rows]


async def devices_of_tenant(conn: asyncpg.Connection, tenant_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT device_id FROM devices WHERE tenant_id = $1 ORDER BY device_id", tenant_id
    )
    return [r["device_id"] for r in rows]
