"""The OBD poller against `fleet-sim elm327 --pty`: discovery, values, ignition, quirks, replug."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet_edge.config import ObdConfig
from fleet_edge.obd.poller import ObdPoller
from tests.edge.sims import SimDevice
from tests.edge.waiting import eventually


def pty_fds() -> list[str]:
    """Pseudo-terminals this process has open."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/dev/pts/") or target == "/dev/ptmx":
                out.append(target)
    return out


def config(link: Path, **kw: object) -> ObdConfig:
    base: dict[str, object] = {
        "enabled": True,
        "port": link,
        "reopen_max_s": 0.5,
        "ecu_silent_s": 2.0,
        "pids_per_s": 20.0,
    }
    return ObdConfig.model_validate({**base, **kw})


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for t in tasks:
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t


async def test_discovery_values_dtcs_vin_and_ignition_cycle(
    tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    sim = SimDevice("elm327", tmp_path / "elm0", "--dtc", "P0133", "--pending-dtc", "U0100")
    sim.plug()
    try:
        p = ObdPoller(config(tmp_path / "elm0"))
        running.append(asyncio.create_task(p.run()))
        await eventually(lambda: p.ignition is True and "ect" in p.values, 30, "engine values")
        assert p.vin == "WVWZZZ1KZ8W123456"
        assert p.protocol == "ISO 15765-4 CAN (11 bit, 500 kbaud)"
        assert {0x0C, 0x0D, 0x05, 0xA6} <= p.supported
        assert p.dtcs == ["P0133"] and p.pending_dtcs == ["U0100"]
        eng = p.snapshot()
        assert eng is not None and eng.ign is True and eng.rpm is not None and eng.rpm >= 700
        assert eng.age is not None and eng.age < 10_000 and eng.dtc == ["P0133"]

        sim.toggle_ignition()  # key off: the ECU falls silent
        await eventually(lambda: p.ignition is False, 30, "ignition off")
        assert p.health()["ecu"] == "silent"
        eng = p.snapshot()
        assert eng is not None and eng.rpm is None and eng.ign is False
        assert eng.vbat is not None and eng.vbat < 13.0  # resting battery, from ATRV
        sim.toggle_ignition()  # key on again
        await eventually(lambda: p.ignition is True, 40, "ignition on again")
        h = p.health()
        assert h["rejected"].get("no_data", 0) + h["rejected"].get("unable_to_connect", 0) > 0
        assert p.stats.ignition_changes >= 2
    finally:
        sim.close()


async def test_quirky_clone_is_handled(tmp_path: Path, running: list[asyncio.Task[None]]) -> None:
    sim = SimDevice("elm327", tmp_path / "elm0", "--clone")
    sim.plug()
    try:
        p = ObdPoller(config(tmp_path / "elm0", timeout_s=3.0))
        running.append(asyncio.create_task(p.run()))
        await eventually(lambda: {"rpm", "vss", "ect"} <= set(p.values), 60, "values via a clone")
        rejected = p.health()["rejected"]
        assert rejected.get("multi_pid_unsupported") == 1  # fell back once, then one PID each
        assert rejected.get("init_atat1", 0) >= 1
        assert p.adapter == "ELM327 v2.1"
    finally:
        sim.close()


async def test_unplug_replug_resumes_without_fd_leak(tmp_path: Path) -> None:
    sim = SimDevice("elm327", tmp_path / "elm0")
    p = ObdPoller(config(tmp_path / "elm0"))
    task = asyncio.create_task(p.run())
    await asyncio.sleep(1.0)
    assert p.stats.port == "waiting"  # nothing plugged yet: waited for, no error
    assert pty_fds() == []
    sim.plug()
    try:
        await eventually(lambda: p.stats.ecu == "connected", 30, "first connection")
        for cycle in range(1, 4):
            sim.unplug()
            await eventually(lambda c=cycle: p.stats.lost == c, 20, f"loss {cycle}")
            assert p.ignition is False
            sim.plug()
            await eventually(lambda c=cycle: p.stats.restored == c, 20, f"return {cycle}")
            p.values.clear()
            await eventually(lambda: "rpm" in p.values, 30, f"values after replug {cycle}")
            assert p.ignition is True
            # The simulators are other processes: every pty fd here is the poller's.
            assert len(pty_fds()) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sim.close()
    assert pty_fds() == []  # the poller holds nothing once stopped
