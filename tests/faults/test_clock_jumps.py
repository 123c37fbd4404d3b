"""The device's wall clock jumps (back a day, forward a year) while the agent runs.

libfaketime (Debian package ``faketime``) is preloaded into the agent only;
its offset comes from a file the test rewrites, so the jumps happen while the
agent runs, as ``date -s`` or a bad NTP/RTC step would. The monotonic clock is
left alone, as the kernel does on a real step. Fix times come from the
receiver (GNSS time), and ordering and dedup rely on fix time and seq, so the
database must hold every committed fix once, in order, with its true time.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.faults.rig import AgentRig
from tests.harness import CloudStack, db_fetch, wait_until

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def faketime_env(offset_file: Path) -> dict[str, str]:
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",  # re-read the offset: jumps take effect at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def offset_s(spec: str) -> int:
    """libfaketime's "+365d" / "-1d" / "+0" in seconds."""
    units = {"d": 86_400, "h": 3600, "m": 60, "s": 1}
    if spec[-1] in units:
        return int(float(spec[:-1]) * units[spec[-1]])
    return int(spec)


def seen_offset_s(cloud: CloudStack, device: str) -> int | None:
    """The agent's wall clock minus ours, rounded to the hour, from its last status."""
    rows = db_fetch(cloud.dsn, "SELECT status FROM device_status WHERE device_id = $1", device)
    t = json.loads(str(rows[0]["status"])).get("t") if rows else None
    if not isinstance(t, int):
        return None
    return round((t / 1000 - time.time()) / 3600) * 3600


def jumps(cloud: CloudStack, tmp_path: Path, offsets: list[str], step_s: float) -> None:
    if not LIBFAKETIME.exists() or shutil.which("faketime") is None:
        pytest.fail("libfaketime missing: apt-get install faketime (deploy/bootstrap.sh)")
    offset = tmp_path / "faketime-offset"
    offset.write_text("+0\n")
    rig = AgentRig(tmp_path, cloud.broker.host, cloud.broker.port, seed=51, broker=cloud.broker)
    cloud.register_vehicle(f"Clock {rig.device}", rig.device)
    try:
        rig.start_gps()
        rig.start_agent(env=faketime_env(offset))
        for i, off in enumerate(offsets):
            rig.idle(step_s)
            offset.write_text(off + "\n")
            # The agent really lives on the jumped clock: its status carries its wall time.
            want = offset_s(off)
            wait_until(lambda: seen_offset_s(cloud, rig.device) == want,  # noqa: B023
                       30, f"the agent's status to show the clock at {off}")  # fmt: skip
            if i % 2 == 1:  # and a crash under the jumped clock, restarted under it
                rig.kill_agent()
                rig.start_agent(env=faketime_env(offset))
        rig.idle(step_s)
        rig.finish()
        report = rig.assert_exactly_once(cloud.dsn)
    finally:
        rig.close()
    assert report["out_of_order"] == 0
    assert report["expected"] >= len(offsets) * step_s * 5


def test_clock_back_a_day_and_forward_a_year(cloud: CloudStack, tmp_path: Path) -> None:
    jumps(cloud, tmp_path, ["-1d", "+365d", "-1d", "+0"], step_s=3)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # the suite's 300 s limit is for short tests
def test_clock_jumps_10min(cloud: CloudStack, tmp_path: Path) -> None:
    offsets = ["-1d", "+365d", "+0", "-30d", "+3650d", "-1d"] * 5
    jumps(cloud, tmp_path, offsets, step_s=19)
