"""Both sides together: the real cloud and a real ``fleet-agent run`` (H3b's
side) on the secured broker, with a simulated GPS receiver. A rollout to the
agent's fleet is applied and reported, the cloud shows it in sync, and a
locate command comes back with a position."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fleet_cloud import directory
from tests.edge.sims import SimDevice
from tests.harness import Broker
from tests.remote_agent.control import AgentProcess
from tests.remote_cloud.conftest import RemoteCloud, wait_for


@dataclass
class CloudKey:
    """What AgentProcess needs of a key: the public half the unit is provisioned with."""

    public: str


@pytest.fixture
def gps(tmp_path: Path) -> Iterator[SimDevice]:
    sim = SimDevice("gps", tmp_path / "gps0", "--hz", "2", "--seed", "5").plug()
    yield sim
    sim.close()


def _register(rc: RemoteCloud, device_id: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(rc.stack.dsn)
        try:
            tid = await directory.ensure_tenant(conn, rc.stack.tenant)
            fid = await directory.ensure_fleet(conn, tid, f"agents-{uuid.uuid4().hex[:6]}")
            await directory.ensure_vehicle_with_device(conn, tid, fid, device_id, device_id)
            return fid
        finally:
            await conn.close()

    return asyncio.run(go())


def test_rollout_and_command_with_a_real_agent(
    remote_cloud: RemoteCloud, broker: Broker, tmp_path: Path, gps: SimDevice
) -> None:
    agent = AgentProcess(broker, tmp_path, CloudKey(remote_cloud.public_key))  # type: ignore[arg-type]
    dev = agent.device_id
    fid = _register(remote_cloud, dev)
    agent.start()
    try:
        sql = "SELECT 1 FROM device_status WHERE online AND device_id = $1"
        wait_for(lambda: bool(remote_cloud.db(sql, dev)), "the agent to be online", 60)
        ans = remote_cloud.call("POST", "/api/v1/config/rollouts", {
            "fleet_id": fid, "set": {"sampler.max_interval_s": 30, "log_level": "debug"},
            "canary_percent": 100, "max_failures_percent": 0, "wait_s": 60})  # fmt: skip
        assert ans.status == 201, ans.body

        def rollout() -> dict[str, Any]:
            return dict(remote_cloud.call("GET", f"/api/v1/config/rollouts/{ans.body['id']}").body)

        wait_for(lambda: rollout()["state"] in ("done", "aborted"), "the rollout", 90)
        r = rollout()
        assert r["state"] == "done", (r, agent.log()[-3000:])
        assert [(m["device_id"], m["result"]) for m in r["members"]] == [(dev, "applied")]
        c = remote_cloud.call("GET", f"/api/v1/devices/{dev}/config").body
        assert c["in_sync"] and c["reported"]["status"] == "applied"
        assert c["desired"]["config"] == {"sampler.max_interval_s": 30.0, "log_level": "debug"}

        cmd = remote_cloud.call("POST", f"/api/v1/devices/{dev}/commands", {"kind": "locate"})
        assert cmd.status == 201, cmd.body

        def answered() -> dict[str, Any]:
            path = f"/api/v1/devices/{dev}/commands/{cmd.body['id']}"
            return dict(remote_cloud.call("GET", path).body)

        wait_for(lambda: answered()["status"] not in ("pending", "sent"), "the locate answer", 60)
        got = answered()
        assert got["status"] == "done", got
        assert got["result"]  # the agent says where it is (or that it has no fix)
    finally:
        agent.stop()
