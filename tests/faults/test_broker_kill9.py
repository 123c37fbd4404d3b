"""kill -9 Mosquitto under load (the agent at 10 Hz and a small simulated fleet), restart it.

The broker loses whatever it held only in memory (QoS 1 messages in flight,
queued acks since its last autosave); the devices' end-to-end acks make them
send all of it again, and the cloud stores each fix once.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.rig import AgentRig, FleetLoad
from tests.harness import CloudStack


def broker_kills(cloud: CloudStack, tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    rig = AgentRig(tmp_path / "agent", cloud.broker.host, cloud.broker.port, seed=seed,
                   broker=cloud.broker)  # fmt: skip
    rig.tmp.mkdir()
    cloud.register_vehicle(f"Broker kill {rig.device}", rig.device)
    load = FleetLoad(tmp_path, cloud.broker.host, cloud.broker.port)
    try:
        rig.start()
        load.start(cloud)
        for _ in range(kills):
            rig.idle(rng.uniform(4, 8))
            cloud.broker.kill9()
            rig.idle(rng.uniform(0.5, 3))
            cloud.broker.start()
        rig.idle(5)
        rig.finish(timeout=120)
        rig.assert_exactly_once(cloud.dsn)
        fleet = load.finish(cloud.dsn)
        assert fleet["missing"] == 0 and fleet["duplicated"] == 0, fleet["text"]
        assert cloud.proc is not None and cloud.proc.alive()
    finally:
        load.close()
        rig.close()
    assert rig.agent is not None and "connection lost" in rig.agent.log()


def test_broker_kill9_under_load(own_cloud: CloudStack, tmp_path: Path) -> None:
    broker_kills(own_cloud, tmp_path, kills=2, seed=21)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # the suite's 300 s limit is for short tests
def test_broker_kill9_10min(own_cloud: CloudStack, tmp_path: Path) -> None:
    # a kill every 7.75 s on average (6 s up, 1.75 s down): about 8 minutes of kills
    broker_kills(own_cloud, tmp_path, kills=58, seed=22)
