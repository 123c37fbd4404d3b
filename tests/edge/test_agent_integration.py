"""The walk of a fix, in process: pty NMEA -> agent -> real Mosquitto -> cloud ack -> delete."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet_edge.agent import run_agent
from fleet_edge.config import (
    AgentConfig,
    BrokerConfig,
    GpsConfig,
    OutboxConfig,
    PublisherConfig,
    SamplerConfig,
)
from fleet_edge.gps.fix import GpsFix
from fleet_edge.outbox import OutboxError, OutboxStore, read_stats
from fleet_edge.records import encode_fix
from tests.edge.cloud_standin import CloudStandIn
from tests.edge.nmea import epoch, now_utc
from tests.edge.pty_gps import PtyGps
from tests.edge.waiting import eventually
from tests.harness import Broker


def agent_config(broker: Broker, tmp_path: Path, **publisher: Any) -> AgentConfig:
    device_id = f"test-{uuid.uuid4().hex[:10]}"
    return AgentConfig(
        device_id=device_id,
        broker=BrokerConfig(
            host=broker.host,
            port=broker.port,
            password=broker.device_password(device_id),
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        ),
        gps=GpsConfig(port=tmp_path / "gps0", reopen_max_s=0.5),
        outbox=OutboxConfig(path=tmp_path / "outbox.db", commit_interval_s=0.2),
        # Record every epoch: the tests count fixes one for one.
        sampler=SamplerConfig(min_interval_s=0, min_distance_m=0),
        publisher=PublisherConfig(**{"ack_timeout_s": 2.0, "status_interval_s": 1.0, **publisher}),
    )


class RunningAgent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_agent(cfg, self.stop, handle_signals=False))

    def depth(self) -> int:
        try:
            return read_stats(self.cfg.outbox.path).depth
        except OutboxError:
            return -1  # not created yet

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def pty(tmp_path: Path) -> AsyncIterator[PtyGps]:
    gps = PtyGps(tmp_path / "gps0")
    yield gps
    gps.close()


async def feed(gps: PtyGps, start: Any, first: int, n: int) -> None:
    for i in range(first, first + n):
        await gps.write(epoch(start + timedelta(seconds=i), 48.1, 11.5 + i * 0.0002))


async def test_rows_deleted_only_after_cloud_ack_and_resent_until_then(
    broker: Broker, tmp_path: Path, pty: PtyGps
) -> None:
    cfg = agent_config(broker, tmp_path)
    t0 = now_utc()
    async with CloudStandIn(
        broker.host, broker.port, cfg.device_id, acking=False, credentials=broker.observer
    ) as cloud:
        agent = RunningAgent(cfg)
        try:
            await eventually(
                lambda: any(s.online for s in cloud.statuses), 20, "status online:true"
            )
            await feed(pty, t0, 0, 5)
            await eventually(lambda: set(cloud.seqs()) == {1, 2, 3, 4, 5}, 20, "five fixes sent")
            first_seen = cloud.first_arrival()
            # The broker has PUBACKed them (the stand-in got them through it), yet
            # without the cloud's ack nothing is deleted.
            await asyncio.sleep(0.5)
            assert agent.depth() == 5
            # Unacked batches go out again after ack_timeout_s (2 s here).
            await eventually(
                lambda: all(cloud.seqs().count(s) >= 2 for s in range(1, 6)), 30, "re-sends"
            )
            resent_at = {s: [b.at for b in cloud.batches if s in b.seqs][1] for s in range(1, 6)}
            assert all(resent_at[s] - first_seen[s] >= 1.5 for s in range(1, 6))
            assert agent.depth() == 5
            fixes = {f.seq: f for b in cloud.batches for f in b.fixes}
            assert fixes[1].t == int(t0.timestamp() * 1000)
            assert (fixes[5].lat, fixes[5].lon) == (48.1, 11.5008)
            assert fixes[5].fix == 3 and fixes[5].spd == 36.0
            assert all(b.boot == cloud.batches[0].boot for b in cloud.batches)

            # The cloud comes back: its ack deletes the rows.
            cloud.acking = True
            await cloud.ack_everything_received()
            await eventually(lambda: agent.depth() == 0, 20, "outbox emptied by the ack")

            # New fixes flow and are acked as they come.
            await feed(pty, t0, 5, 3)
            await eventually(lambda: {6, 7, 8} <= set(cloud.seqs()), 20, "live fixes")
            await eventually(lambda: agent.depth() == 0, 20, "outbox empty")
            status = cloud.last_status()
            await eventually(
                lambda: (
                    (s := cloud.last_status()) is not None
                    and s.last_ack is not None
                    and s.outbox is not None
                    and s.outbox.depth == 0
                ),
                20,
                "status reporting the ack",
            )
            status = cloud.last_status()
            assert status is not None and status.health is not None
            assert status.health["gps"]["fix"] == "fix"
        finally:
            await agent.shutdown()
        await eventually(
            lambda: (s := cloud.last_status()) is not None and not s.online, 10, "offline status"
        )
    assert read_stats(cfg.outbox.path).depth == 0


def _prefill(path: Path, boots: list[tuple[int, int]]) -> int:
    """Rows left by earlier runs: [(boot, count)]; returns how many."""
    s = OutboxStore(path, 10**9, 10**9)
    base = int((now_utc() - timedelta(hours=3)).timestamp() * 1000)
    n = 0
    for boot, count in boots:
        times = [base + (n + i) * 1000 for i in range(count)]
        s.append(boot, [(t, encode_fix(GpsFix(t=t, lat=1.0, lon=2.0))) for t in times])
        n += count
    s.close()
    return n


async def test_backlog_drains_oldest_first_behind_live_fixes(
    broker: Broker, tmp_path: Path, pty: PtyGps
) -> None:
    cfg = agent_config(broker, tmp_path, drain_rate=100.0, backlog_batch=50)
    backlog = _prefill(cfg.outbox.path, [(111, 300), (222, 300)])
    async with CloudStandIn(
        broker.host, broker.port, cfg.device_id, credentials=broker.observer
    ) as cloud:
        agent = RunningAgent(cfg)
        try:
            await eventually(lambda: len(cloud.seqs()) > 0, 20, "backlog starts")
            await feed(pty, now_utc(), 0, 1)
            live_seq = backlog + 1
            await eventually(lambda: live_seq in cloud.seqs(), 20, "live fix")
            await eventually(
                lambda: set(cloud.seqs()) >= set(range(1, backlog + 2)), 60, "backlog drained"
            )
            await eventually(lambda: agent.depth() == 0, 20, "outbox empty")
        finally:
            await agent.shutdown()
    first = cloud.first_arrival()
    backlog_batches = [b for b in cloud.batches if b.boot in (111, 222)]
    # One batch = one boot, and each batch is in seq order.
    for b in backlog_batches:
        assert b.seqs == sorted(b.seqs)
        assert all(1 <= s <= 300 for s in b.seqs) or all(301 <= s <= 600 for s in b.seqs)
    # Oldest first: first arrivals of backlog seqs never go backwards.
    order = sorted(range(1, backlog + 1), key=lambda s: (first[s], s))
    assert order == list(range(1, backlog + 1))
    # Live went ahead of the end of the backlog.
    assert first[live_seq] < first[backlog]
    # Rate limit (a lower bound, so slow machines cannot break it): 600 fixes
    # at 100/s with bursts of up to two 50-fix batches take >= 5 s.
    assert first[backlog] - first[1] >= 4.0
    assert all(b.content_type == "application/json+zlib" for b in backlog_batches)


async def test_agent_survives_broker_it_cannot_reach_and_keeps_recording(
    tmp_path: Path, pty: PtyGps
) -> None:
    from tests.harness import free_port

    cfg = AgentConfig(
        device_id="test-unreachable",
        broker=BrokerConfig(
            host="127.0.0.1", port=free_port(), reconnect_min_s=0.2, reconnect_max_s=0.5
        ),
        gps=GpsConfig(port=tmp_path / "gps0"),
        outbox=OutboxConfig(path=tmp_path / "outbox.db", commit_interval_s=0.2),
        sampler=SamplerConfig(min_interval_s=0, min_distance_m=0),
    )
    agent = RunningAgent(cfg)
    try:
        # pyserial flushes what was buffered before the port opened: keep
        # talking, as a receiver does, until fixes get committed.
        t0 = now_utc()
        for i in range(200):
            await feed(pty, t0, i, 1)
            await asyncio.sleep(0.1)
            if agent.depth() >= 4:
                break
        assert agent.depth() >= 4
        assert not agent.task.done()
    finally:
        t = time.monotonic()
        await agent.shutdown()
        assert time.monotonic() - t < 10


async def test_broker_restart_reconnects_and_delivers_what_was_recorded_meanwhile(
    tmp_path: Path, pty: PtyGps
) -> None:
    own = Broker(tmp_path / "mosquitto").start()  # private: this test kills it
    cfg = agent_config(own, tmp_path)
    t0 = now_utc()
    agent = None
    try:
        async with CloudStandIn(
            own.host, own.port, cfg.device_id, credentials=own.observer
        ) as cloud:
            agent = RunningAgent(cfg)
            await eventually(lambda: any(s.online for s in cloud.statuses), 20, "online")
            await feed(pty, t0, 0, 3)
            await eventually(lambda: set(cloud.seqs()) >= {1, 2, 3}, 20, "first fixes")
            await eventually(lambda: agent is not None and agent.depth() == 0, 20, "acked")
            own.kill9()
            await eventually(lambda: cloud.disconnected, 20, "the stand-in sees the broker die")
        await feed(pty, t0, 3, 4)  # recorded while the broker is down
        await eventually(lambda: agent is not None and agent.depth() == 4, 20, "kept offline")
        own = Broker(own.data_dir, port=own.port).start()
        async with CloudStandIn(
            own.host, own.port, cfg.device_id, credentials=own.observer
        ) as cloud:
            await eventually(lambda: set(cloud.seqs()) >= {4, 5, 6, 7}, 30, "backlog after restart")
            await eventually(lambda: agent is not None and agent.depth() == 0, 20, "acked")
            await eventually(
                lambda: (
                    (s := cloud.last_status()) is not None and s.online and (s.reconnects or 0) >= 1
                ),
                20,
                "status counting the reconnect",
            )
    finally:
        if agent is not None:
            await agent.shutdown()
        own.stop()
