"""kill -9 the agent at random 2-7 s intervals while the receiver runs at 10 Hz.

The test restarts it as systemd's ``Restart=always`` would (after a short
``RestartSec``). Every fix the outbox committed must be stored exactly once.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.faults.rig import GPS_HZ, AgentRig
from tests.harness import CloudStack

RESTART_SEC = 0.5


def kill_loop(cloud: CloudStack, tmp_path: Path, duration_s: float, seed: int) -> None:
    rig = AgentRig(tmp_path, cloud.broker.host, cloud.broker.port, seed=seed, broker=cloud.broker)
    cloud.register_vehicle(f"Kill-9 {rig.device}", rig.device)
    rng = random.Random(seed)
    kills = 0
    try:
        rig.start()
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            rig.idle(rng.uniform(2.0, 7.0))
            rig.kill_agent()
            kills += 1
            time.sleep(RESTART_SEC)
            rig.start_agent()
        rig.idle(3)  # the last run gets to deliver under normal conditions too
        rig.finish()
        report = rig.assert_exactly_once(cloud.dsn)
    finally:
        rig.close()
    assert kills >= duration_s / 7 - 1
    # The agent was up most of the time: most of what the receiver wrote was committed.
    assert report["expected"] >= duration_s * GPS_HZ * 0.5, report["text"]
    assert len(rig.seen) > 0


def test_agent_kill9_loop_short(cloud: CloudStack, tmp_path: Path) -> None:
    kill_loop(cloud, tmp_path, duration_s=20, seed=4)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # the suite's 300 s limit is for short tests
def test_agent_kill9_loop_10min(cloud: CloudStack, tmp_path: Path) -> None:
    kill_loop(cloud, tmp_path, duration_s=600, seed=5)
