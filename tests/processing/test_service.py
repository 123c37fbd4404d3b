"""One processing owner per database; the standalone `fleet-cloud process` command."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg

from fleet_cloud.processing.config import ProcessingSettings
from fleet_cloud.processing.service import Processor
from tests.harness import Proc, tool, wait_until
from tests.processing.conftest import drain, eventually, new_vehicle, store


async def test_exactly_one_owner_and_failover(pool: asyncpg.Pool) -> None:
    cfg = ProcessingSettings(hole_grace_s=0.0, poll_s=0.05)
    a, b = Processor(pool, cfg), Processor(pool, cfg)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    ta = asyncio.create_task(a.run(stop_a))
    tb = asyncio.create_task(b.run(stop_b))
    try:
        await eventually(lambda: a.owner or b.owner, "an owner")
        for _ in range(20):  # never both
            assert not (a.owner and b.owner)
            await asyncio.sleep(0.05)
        owner, standby, stop_owner = (a, b, stop_a) if a.owner else (b, a, stop_b)
        _, vid, dev = await new_vehicle(pool)
        await store(pool, dev, vid, [{"seq": 1, "t": 1_767_400_000_000, "lat": 1.0, "lon": 1.0}])
        await eventually(
            lambda: pool.fetchval("SELECT 1 FROM vehicle_proc_state WHERE vehicle_id = $1", vid),
            "the owner to process the new fix",
        )
        stop_owner.set()  # the owner goes away: the standby takes over
        await eventually(lambda: standby.owner, "the standby to take over")
        assert not owner.owner
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(ta, tb)


def test_process_once_cli(proc_dsn: str) -> None:
    out = subprocess.run(
        [tool("fleet-cloud"), "process", "--once", "--dsn", proc_dsn],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "processed" in out.stdout and "new events" in out.stdout


def test_process_cli_bad_dsn_is_one_line() -> None:
    out = subprocess.run(
        [tool("fleet-cloud"), "process", "--once", "--dsn",
         "postgresql:///no_such_db_here?host=/var/run/postgresql"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: cannot connect to the database")


def test_process_command_runs_and_stops_cleanly(proc_dsn: str, tmp_path: Path) -> None:
    p = Proc([tool("fleet-cloud"), "process", "--dsn", proc_dsn], tmp_path / "process.log").start()
    try:
        wait_until(lambda: "owns processing" in p.log() or not p.alive(), 30, "processing to start")
        assert p.alive(), p.log()
    finally:
        code = p.stop()
    assert code == 0, p.log()
    assert "Traceback" not in p.log()


async def test_filtered_fixes_are_not_evaluated(pool: asyncpg.Pool, processor: Processor) -> None:
    """A fix the plausibility filters flagged (a jump) is stored but never drives an event."""
    _, vid, dev = await new_vehicle(pool)
    t0 = 1_767_500_000_000
    fixes = [{"seq": i + 1, "t": t0 + i * 1000, "lat": 48.1, "lon": 11.5, "spd": 0.0}
             for i in range(30)]  # fmt: skip
    fixes[10] = {**fixes[10], "spd": 250.0}
    await store(pool, dev, vid, fixes)
    await pool.execute(
        "UPDATE positions SET filter_reason = 'speed_jump' WHERE device_id = $1 AND seq = 11", dev
    )
    await drain(processor)
    evs = await pool.fetch("SELECT type FROM events WHERE vehicle_id = $1", vid)
    assert not [e for e in evs if e["type"].startswith("harsh_")]
