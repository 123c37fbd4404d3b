"""``fleet-agent`` as systemd runs it: a subprocess, SIGTERM, kill -9, and its error messages."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from fleet_edge.outbox import read_stats
from tests.edge.cloud_standin import CloudStandIn
from tests.edge.nmea import epoch, now_utc
from tests.edge.pty_gps import PtyGps
from tests.edge.waiting import eventually
from tests.harness import Broker, Proc, tool

AGENT = tool("fleet-agent")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--config", "/nonexistent/agent.toml"], "no such file"),
        (["run", "--device-id", "Bad_ID"], "device_id"),
        (["run", "--device-id", "ok-1", "--broker", "nohost"], "HOST:PORT"),
        (["run", "--device-id", "ok-1", "--outbox", "/proc/nope/outbox.db"], "/proc/nope"),
        (["status", "--outbox", "/nonexistent/outbox.db"], "no outbox"),
        (["status"], "--outbox"),
    ],
)
def test_errors_are_one_clear_line(args: list[str], fragment: str) -> None:
    p = cli(*args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet-agent: ") and fragment in lines[0]
    assert "Traceback" not in p.stderr + p.stdout


def test_bad_config_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('device_id = "ok-1"\n[outbox]\nmax_rows = -1\n')
    p = cli("run", "--config", str(f))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "outbox.max_rows" in p.stderr


CONFIG = """
device_id = "{device_id}"

[broker]
password = "{password}"

[outbox]
# Long on purpose: only the shutdown path can commit the fixes of this test.
commit_interval_s = 30

[sampler]
min_interval_s = 0
min_distance_m = 0

[publisher]
status_interval_s = 0.5
ack_timeout_s = 2
"""


def recorded(cloud: CloudStandIn) -> int | None:
    s = cloud.last_status()
    if s is None or not s.online or s.health is None:
        return None
    return int(s.health["sampler"]["recorded"])


async def test_sigterm_commits_pending_fixes_then_restart_delivers_and_kill9_fires_will(
    broker: Broker, tmp_path: Path
) -> None:
    device_id = f"test-cli-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(CONFIG.format(device_id=device_id, password=broker.device_password(device_id)))
    outbox = tmp_path / "outbox.db"
    link = tmp_path / "gps0"
    argv = [
        AGENT,
        "run",
        "--config",
        str(cfg),
        "--broker",
        f"{broker.host}:{broker.port}",
        "--gps-serial",
        str(link),
        "--outbox",
        str(outbox),
    ]
    gps = PtyGps(link, plugged=False)
    env = {"PYTHONUNBUFFERED": "1"}
    async with CloudStandIn(
        broker.host, broker.port, device_id, acking=False, credentials=broker.observer
    ) as cloud:
        # 1. Started before its GPS exists: it waits for it, it does not fail.
        agent = Proc(argv, tmp_path / "agent1.log", env).start()
        try:
            await eventually(lambda: recorded(cloud) is not None, 30, "status online:true")
            assert agent.alive()
            gps.plug()
            t0 = now_utc()
            i = 0
            while (recorded(cloud) or 0) < 5:
                await gps.write(epoch(t0 + timedelta(seconds=i), 48.1, 11.5 + i * 0.0002))
                i += 1
                await asyncio.sleep(0.2)
                assert i < 200, agent.log()
            # Let the last status catch up with the last fix fed.
            await asyncio.sleep(1.5)
            n = recorded(cloud)
            assert n is not None and n >= 5
            assert read_stats(outbox).depth == 0  # still pending in the writer (30 s interval)
            began = time.monotonic()
            rc = await asyncio.to_thread(agent.stop, 15)
            assert rc == 0, agent.log()
            assert time.monotonic() - began < 10  # the agent's own budget is 5 s
        finally:
            agent.kill9()
        assert read_stats(outbox).depth == n  # every pending fix committed on SIGTERM
        await eventually(lambda: not cloud.statuses[-1].online, 10, "offline status")
        p = cli("status", "--outbox", str(outbox))
        assert p.returncode == 0 and f"{n} fixes" in p.stdout and "last seq" in p.stdout

        # 2. Restart: the previous run's rows are backlog, delivered and acked.
        cloud.acking = True
        agent = Proc(argv, tmp_path / "agent2.log", env).start()
        try:
            await eventually(lambda: set(cloud.seqs()) >= set(range(1, n + 1)), 30, "backlog")
            await eventually(lambda: read_stats(outbox).depth == 0, 30, "outbox emptied")
            await eventually(lambda: recorded(cloud) is not None, 30, "online again")
            # 3. kill -9: no clean disconnect, so the broker publishes the Will.
            agent.kill9()
            await eventually(lambda: not cloud.statuses[-1].online, 30, "Will online:false")
            will = cloud.statuses[-1]
            assert will.t is None and will.outbox is None  # the bare Will document
        finally:
            agent.kill9()
            gps.close()
    assert read_stats(outbox).last_seq == n
