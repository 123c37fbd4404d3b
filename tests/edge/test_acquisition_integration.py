"""The agent reading both simulators on ptys (GPS NMEA + ELM327), publishing to a real broker:
engine values on the fixes, ignition events, counters in the health report, and both
devices unplugged and re-plugged while it runs."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from fleet_edge.config import (
    AgentConfig,
    BrokerConfig,
    GpsConfig,
    ObdConfig,
    OutboxConfig,
    PublisherConfig,
    SamplerConfig,
)
from fleet_wire import Fix
from tests.edge.cloud_standin import CloudStandIn
from tests.edge.sims import SimDevice
from tests.edge.test_agent_integration import RunningAgent
from tests.edge.waiting import eventually
from tests.harness import Broker


def pty_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/pts/"):
                n += 1
    return n


def config(broker: Broker, tmp_path: Path) -> AgentConfig:
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
        obd=ObdConfig(enabled=True, port=tmp_path / "elm0", reopen_max_s=0.5, ecu_silent_s=2.0),
        outbox=OutboxConfig(path=tmp_path / "outbox.db", commit_interval_s=0.2),
        sampler=SamplerConfig(min_interval_s=0, min_distance_m=0),
        publisher=PublisherConfig(status_interval_s=1.0),
    )


def consistent_speeds(fixes: list[Fix]) -> int:
    by_t = {f.t: f.spd for f in fixes if f.spd is not None}
    diffs = []
    for f in with_engine(fixes):
        assert f.eng is not None
        if f.eng.vss is None or f.eng.age is None:
            continue
        read_at = f.t + 300 - f.eng.age
        near = [v for t, v in by_t.items() if abs(t - read_at) <= 1000 and v is not None]
        if near:
            diffs.append(min(abs(f.eng.vss - v) for v in near))
    assert diffs, "no fix with both speeds"
    assert sorted(diffs)[len(diffs) // 2] <= 4.0, diffs
    return len(diffs)


def with_engine(fixes: list[Fix]) -> list[Fix]:
    return [f for f in fixes if f.eng is not None and f.eng.rpm is not None]


async def test_both_sims_engine_on_fixes_and_unplug_replug(broker: Broker, tmp_path: Path) -> None:
    gps = SimDevice("gps", tmp_path / "gps0", "--seed", "5", "--bad-checksum-rate", "0.05",
                    "--garbage-rate", "0.05")  # fmt: skip
    elm = SimDevice("elm327", tmp_path / "elm0", "--seed", "5", "--dtc", "P0133",
                    route_start_ms=gps.route_start_ms)  # fmt: skip
    gps.plug()
    elm.plug()
    cfg = config(broker, tmp_path)
    agent = None
    try:
        async with CloudStandIn(
            broker.host, broker.port, cfg.device_id, credentials=broker.observer
        ) as cloud:
            agent = RunningAgent(cfg)

            def fixes() -> list[Fix]:
                return [f for b in cloud.batches for f in b.fixes]

            await eventually(lambda: len(with_engine(fixes())) >= 5, 60, "fixes with engine")
            f = with_engine(fixes())[-1]
            assert f.eng is not None and f.eng.ign is True and f.eng.dtc == ["P0133"]
            assert f.eng.age is not None and f.eng.age <= 10_000
            assert f.eng.ect is not None and f.eng.vbat is not None
            # Same seed and route start: the ECU's speed is the GPS speed of the moment
            # it was read (fix time + ~0.3 s of reading - the engine values' age),
            # give or take one epoch and the ECU's whole km/h.
            assert consistent_speeds(fixes()) >= 3

            # Key off, key on: events recorded, ignition on the fixes.
            elm.toggle_ignition()
            await eventually(
                lambda: any(x.eng is not None and x.eng.ign is False for x in fixes()),
                40, "a fix with the ignition off",
            )  # fmt: skip
            elm.toggle_ignition()
            n = len(fixes())
            await eventually(
                lambda: any(x.eng is not None and x.eng.ign for x in fixes()[n:]), 60, "ign on"
            )

            def health() -> dict[str, object]:
                s = cloud.last_status()
                return s.health if s is not None and s.health is not None else {}

            await eventually(
                lambda: health().get("sampler", {}).get("events", {}).get("ignition_on", 0) >= 1,  # type: ignore[union-attr]
                20, "ignition events in the health report",
            )  # fmt: skip
            h = health()
            gps_h, obd_h = h["gps"], h["obd"]
            assert isinstance(gps_h, dict) and isinstance(obd_h, dict)
            assert gps_h["rejected"].get("bad_checksum", 0) > 0  # counted by reason
            assert (
                obd_h["rejected"].get("no_data", 0) + obd_h["rejected"].get("unable_to_connect", 0)
                > 0
            )  # the ECU's silence while the key was off
            assert obd_h["protocol"] and h["sampler"]["events"]["ignition_off"] >= 1  # type: ignore[index]

            # Unplug both USB devices while the agent runs, then plug them back.
            assert pty_fds() == 2
            for cycle in (1, 2):
                gps.unplug()
                elm.unplug()
                await eventually(
                    lambda c=cycle: health()["gps"]["lost"] >= c and health()["obd"]["lost"] >= c,  # type: ignore[index]
                    30, f"both lost ({cycle})",
                )  # fmt: skip
                seqs_before = max(cloud.seqs())
                gps.plug()
                elm.plug()
                await eventually(
                    lambda s=seqs_before: len(with_engine([x for x in fixes() if x.seq > s])) >= 3,
                    60, f"fixes with engine after replug {cycle}",
                )  # fmt: skip
                assert pty_fds() == 2  # one per device: nothing leaked across the replug
            h = health()
            assert h["gps"]["restored"] >= 2 and h["obd"]["restored"] >= 2  # type: ignore[index]
            seqs = [f.seq for f in fixes()]
            assert sorted(set(seqs)) == list(range(1, max(seqs) + 1))  # nothing lost
    finally:
        if agent is not None:
            await agent.shutdown()
        gps.close()
        elm.close()
    assert pty_fds() == 0
