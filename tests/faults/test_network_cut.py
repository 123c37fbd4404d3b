"""Cut the agent's link to the broker for a while at 10 Hz, then restore it.

The link is a ``FaultProxy``: a cut aborts the agent's connection and refuses
new ones. After the restore the backlog drains oldest-first while live fixes
keep arriving ahead of it; every committed fix is stored once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.netproxy import FaultProxy
from tests.faults.rig import AgentRig
from tests.harness import CloudStack, db_fetch


def cut_and_restore(cloud: CloudStack, tmp_path: Path, cuts: list[float], seed: int) -> None:
    proxy = FaultProxy(cloud.broker.host, cloud.broker.port).start()
    # A slow drain (20 fixes/s in batches of 50) makes "live fixes keep arriving
    # during the drain" observable with a backlog of a few hundred fixes.
    rig = AgentRig(tmp_path, proxy.host, proxy.port, seed=seed, broker=cloud.broker,
                   publisher_cfg={"drain_rate": 20.0, "backlog_batch": 50})  # fmt: skip
    cloud.register_vehicle(f"Net cut {rig.device}", rig.device)
    windows: list[tuple[int, int]] = []
    try:
        rig.start()
        for down_s in cuts:
            rig.idle(6)
            cut_ms = int(time.time() * 1000)
            proxy.cut()
            rig.idle(down_s)
            restore_ms = int(time.time() * 1000)
            proxy.restore()
            windows.append((cut_ms, restore_ms))
        rig.idle(3)
        rig.finish(timeout=300)
        rig.assert_exactly_once(cloud.dsn)
    finally:
        rig.close()
        proxy.close()
    rows = db_fetch(
        cloud.dsn,
        "SELECT (extract(epoch FROM fix_time) * 1000)::bigint AS t, ingest_seq FROM positions"
        " WHERE device_id = $1",
        rig.device,
    )
    arrivals = [(int(r["t"]), int(r["ingest_seq"])) for r in rows]  # type: ignore[call-overload]
    for cut_ms, restore_ms in windows:
        backlog = [a for t, a in arrivals if cut_ms + 1000 <= t <= restore_ms - 1000]
        # The agent kept recording while cut off (not every epoch: on a loaded
        # machine a starved reader lets the receiver drop some, as a UART would).
        assert len(backlog) >= (restore_ms - cut_ms) / 1000, "the cut's fixes were recorded"
        drain_end = max(backlog)
        live = [a for t, a in arrivals if t > restore_ms + 1000 and a < drain_end]
        # Live fixes recorded after the restore were stored while the backlog still drained.
        assert len(live) >= 10, (len(backlog), len(live))


def test_network_cut_backlog_drains_live_first(cloud: CloudStack, tmp_path: Path) -> None:
    cut_and_restore(cloud, tmp_path, cuts=[20.0], seed=31)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # the suite's 300 s limit is for short tests
def test_network_cuts_minutes(cloud: CloudStack, tmp_path: Path) -> None:
    cut_and_restore(cloud, tmp_path, cuts=[180.0, 60.0, 240.0], seed=32)
