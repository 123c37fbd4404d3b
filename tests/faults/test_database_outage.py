"""Stop PostgreSQL under load, start it again: nothing acked early, nothing lost or doubled.

The machine's shared PostgreSQL is never touched: the test runs its own
cluster (``PgCluster``), its own Mosquitto and its own ``fleet-cloud serve``.
The stop is ``pg_ctl stop -m immediate``: to the cloud it is a crash.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.pgcluster import PgCluster
from tests.faults.rig import AgentRig, FleetLoad
from tests.harness import Broker, CloudStack, tool


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[tuple[PgCluster, CloudStack]]:
    pg = PgCluster().init().start()
    broker = cloud = None
    try:
        dsn = pg.create_database("fleet")
        subprocess.run([tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True, timeout=120,
                       capture_output=True)  # fmt: skip
        broker = Broker(tmp_path / "mosquitto").start()
        cloud = CloudStack(broker, dsn, tmp_path / "cloud").start()
        yield pg, cloud
    finally:
        if cloud is not None:
            cloud.stop()
        if broker is not None:
            broker.stop()
        pg.destroy()


def outage(
    stack: tuple[PgCluster, CloudStack], tmp_path: Path, outages: int, down_s: float
) -> None:
    pg, cloud = stack
    rig = AgentRig(tmp_path / "agent", cloud.broker.host, cloud.broker.port, broker=cloud.broker)
    rig.tmp.mkdir()
    cloud.register_vehicle(f"DB outage {rig.device}", rig.device)
    load = FleetLoad(tmp_path, cloud.broker.host, cloud.broker.port)
    try:
        rig.start()
        load.start(cloud)
        for _ in range(outages):
            rig.idle(8)
            pg.stop("immediate")
            rig.idle(down_s)
            assert rig.depth() > down_s * 5  # nothing was acked while the database was down
            pg.start()
        rig.idle(5)
        rig.finish(timeout=180)
        rig.assert_exactly_once(cloud.dsn)
        fleet = load.finish(cloud.dsn)
        assert fleet["missing"] == 0 and fleet["duplicated"] == 0, fleet["text"]
        assert cloud.proc is not None and cloud.proc.alive(), "the cloud must survive the outage"
    finally:
        load.close()
        rig.close()


def test_database_down_30s_under_load(
    private_stack: tuple[PgCluster, CloudStack], tmp_path: Path
) -> None:
    outage(private_stack, tmp_path, outages=1, down_s=30)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # the suite's 300 s limit is for short tests
def test_database_outages_10min(
    private_stack: tuple[PgCluster, CloudStack], tmp_path: Path
) -> None:
    # 6 x (8 s up + 60 s down) + drain: about 10 minutes
    outage(private_stack, tmp_path, outages=7, down_s=60)
