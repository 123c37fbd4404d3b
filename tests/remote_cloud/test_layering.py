"""Layering and versions: device over fleet over tenant, the nearest fleet
ancestor wins, a version grows by one per change that affects the device, and
values are checked with the agent's own config model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from fleet_cloud import directory
from fleet_cloud.db import create_pool
from fleet_cloud.remote_config import desired
from fleet_cloud.remote_config.layering import Chain, fleet_path, resolve
from fleet_cloud.remote_config.signing import write_new_key
from fleet_cloud.remote_config.validation import ConfigValueError, validate_document
from fleet_wire.remote import verify


def test_resolve_order_device_over_staged_over_fleets_over_tenant() -> None:
    chain = Chain(
        "truck-001", 1, [10, 11],
        tenant={"a": "tenant", "b": "tenant", "c": "tenant", "d": "tenant"},
        fleets={10: {"b": "root", "c": "root"}, 11: {"c": "leaf"}},
        device={"d": "device"},
    )  # fmt: skip
    assert resolve(chain) == {"a": "tenant", "b": "root", "c": "leaf", "d": "device"}
    # A change staged on the root fleet sits right after the root's layer: the
    # leaf fleet's and the device's own overrides still win.
    staged = resolve(chain, (10, {"a": "x", "c": "x", "d": "x"}))
    assert staged == {"a": "x", "b": "root", "c": "leaf", "d": "device"}


def test_fleet_path_is_root_first_and_survives_a_cycle() -> None:
    assert fleet_path({3: 2, 2: 1, 1: None}, 3) == [1, 2, 3]
    assert fleet_path({1: 2, 2: 1}, 1) == [2, 1]
    assert fleet_path({}, None) == []


def test_values_checked_with_the_agents_model_and_normalised() -> None:
    assert validate_document({"sampler.min_interval_s": "5", "obd.pids": ["rpm"]}) == {
        "sampler.min_interval_s": 5.0,
        "obd.pids": ["rpm"],
    }
    for doc, key in [
        ({"broker.password": "x"}, "broker.password"),  # local to the unit
        ({"device_id": "other"}, "device_id"),
        ({"broker.port": 70000}, "broker.port"),
        ({"obd.pids": ["warp_drive"]}, "obd.pids"),
        ({"publisher.drain_rate": -1}, "publisher.drain_rate"),
        ({"log_level": "chatty"}, "log_level"),
    ]:
        with pytest.raises(ConfigValueError) as err:
            validate_document(doc)
        assert err.value.key == key, err.value


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database, 4)
    yield p
    await p.close()


async def _tenant_with_nested_fleets(conn: asyncpg.Connection) -> tuple[int, list[int], list[str]]:
    tag = uuid.uuid4().hex[:6]
    tid = await directory.ensure_tenant(conn, f"layers-{tag}")
    root = await directory.ensure_fleet(conn, tid, "root")
    mid = await directory.ensure_fleet(conn, tid, "mid")
    leaf = await directory.ensure_fleet(conn, tid, "leaf")
    await conn.execute("UPDATE fleets SET parent_id = $1 WHERE id = $2", root, mid)
    await conn.execute("UPDATE fleets SET parent_id = $1 WHERE id = $2", mid, leaf)
    devs = [f"lay-{tag}-{i}" for i in range(3)]
    for dev, fleet in zip(devs, (root, mid, leaf), strict=True):
        await directory.ensure_vehicle_with_device(conn, tid, fleet, dev, dev)
    return tid, [root, mid, leaf], devs


async def _set_layer(
    conn: asyncpg.Connection, tid: int, scope: str, ref: object, doc: dict
) -> None:
    col = {"tenant": None, "fleet": "fleet_id", "device": "device_id"}[scope]
    await conn.execute(
        "DELETE FROM config_layers WHERE tenant_id = $1 AND scope = $2"
        + (f" AND {col} = $3" if col else ""),
        tid, scope, *([ref] if col else []),
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO config_layers (tenant_id, scope, fleet_id, device_id, document)
           VALUES ($1, $2, $3, $4, $5)""",
        tid, scope, ref if scope == "fleet" else None, ref if scope == "device" else None, doc,
    )  # fmt: skip


async def test_nearest_fleet_wins_and_versions_grow_by_one_per_change(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    public = write_new_key(tmp_path / "k")
    key = (tmp_path / "k").read_bytes()
    async with pool.acquire() as conn:
        tid, (root, mid, _leaf), devs = await _tenant_with_nested_fleets(conn)

        async def recompute() -> dict[str, int]:
            async with conn.transaction():
                got = await desired.recompute(conn, key, devs)
            return {d: i.version for d, i in got.items()}

        assert await recompute() == {}  # nothing configured: nothing issued
        await _set_layer(conn, tid, "tenant", None, {"publisher.drain_rate": 100.0})
        await _set_layer(conn, tid, "fleet", root, {"sampler.min_interval_s": 2.0})
        await _set_layer(conn, tid, "fleet", mid, {"sampler.min_interval_s": 7.0})
        assert await recompute() == {d: 1 for d in devs}
        rows = {
            r["device_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM device_config_desired WHERE device_id = ANY($1::text[])", devs
            )
        }
        # root's device: root layer; mid's and leaf's: mid, the nearest ancestor.
        assert [rows[d]["document"]["sampler.min_interval_s"] for d in devs] == [2.0, 7.0, 7.0]
        assert all(rows[d]["document"]["publisher.drain_rate"] == 100.0 for d in devs)
        for d in devs:  # what is stored verifies with the agent's check
            assert verify(public, desired.document(rows[d]))

        assert await recompute() == {}  # nothing changed: no new version
        await _set_layer(conn, tid, "device", devs[2], {"sampler.min_interval_s": 1.0})
        assert await recompute() == {devs[2]: 2}
        await _set_layer(conn, tid, "fleet", mid, {"sampler.min_interval_s": 9.0})
        assert await recompute() == {devs[1]: 2}  # devs[2] keeps its own override

        # A combination the agent would refuse is refused as a whole.
        await _set_layer(conn, tid, "device", devs[0], {"sampler.max_interval_s": 1.0})
        with pytest.raises(desired.DeviceConfigError, match=devs[0]):
            await recompute()
