"""Signed remote config against a real ``fleet-agent run``, a real broker and a simulated receiver.

Applied live (the sampler's spacing of recorded fixes changes), reported on
``up/config``; every kind of bad document rejected with its reason while the
config in force stays; a config pointing at a wrong broker reverts within the
probation window and is reported ``reverted`` once the agent is back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_edge.remote.state import CONFIG_STATE_FILE, ConfigState
from tests.edge.sims import SimDevice
from tests.edge.waiting import eventually
from tests.harness import Broker, free_port
from tests.remote_agent.control import AgentProcess, Control, SigningKey, gaps_ms, recorded_after

SLOW = {"sampler.min_interval_s": 2.0, "sampler.max_interval_s": 2.0}


@pytest.fixture
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def gps(tmp_path: Path) -> Iterator[SimDevice]:
    sim = SimDevice("gps", tmp_path / "gps0", "--hz", "5", "--seed", "3").plug()
    yield sim
    sim.close()


def state(agent: AgentProcess) -> ConfigState:
    return ConfigState.model_validate(
        json.loads((agent.state_dir / CONFIG_STATE_FILE).read_bytes())
    )


async def test_signed_config_applied_live_and_bad_documents_rejected(
    broker: Broker, tmp_path: Path, key: SigningKey, gps: SimDevice
) -> None:
    agent = AgentProcess(broker, tmp_path, key).start()
    dev = agent.device_id
    try:
        async with Control(broker, dev) as ctl:
            await ctl.online()
            # Every 5 Hz epoch recorded: 200 ms apart.
            assert min(gaps_ms(await recorded_after(ctl, 6))) < 1000

            await ctl.push_config(key.doc(dev, 1, {**SLOW, "log_level": "debug"}))
            applied = await ctl.report(1, "applied")
            assert applied.active_version == 1 and applied.reason is None
            # Live: fixes recorded from now on are at least 2 s apart (fix time).
            tail = await recorded_after(ctl, 4)
            assert all(g >= 2000 for g in gaps_ms(tail)[-2:]), gaps_ms(tail)
            await ctl.push_config(key.doc(dev, 2, SLOW))
            await ctl.report(2, "applied")

            other = SigningKey()
            good = key.doc(dev, 3, {"sampler.min_interval_s": 0.0})
            flipped = {**good, "config": {"sampler.min_interval_s": 0.5}}
            sig = bytearray(good["sig"].encode())
            sig[5] ^= 0x01  # one bit of the base64 text
            cases: list[tuple[int, dict[str, object] | bytes, str]] = [
                (3, {**good, "sig": ""}, "bad signature"),  # unsigned
                (3, other.doc(dev, 3, {"sampler.min_interval_s": 0.0}), "bad signature"),
                (3, flipped, "bad signature"),
                (3, {**good, "sig": sig.decode("latin-1")}, "bad signature"),
                (1, key.doc(dev, 1, {"sampler.min_interval_s": 0.0}), "older than version 2"),
                (2, key.doc(dev, 2, {"sampler.min_interval_s": 0.0}), "already applied"),
                (4, {**key.doc(dev, 4, {}), "config": "all of it"}, "schema: "),
                (5, {**key.doc(dev, 5, {}), "extra": 1}, "schema: "),
                (6, key.doc("cfg-someone-else", 6, {}), "is for device 'cfg-someone-else'"),
                (7, key.doc(dev, 7, {"sampler.min_interval_s": -1}), "invalid config: sampler"),
                (
                    8,
                    key.doc(dev, 8, {**SLOW, "sampler.max_interval_s": 1.0}),
                    "max_interval_s must",
                ),
                (9, key.doc(dev, 9, {"broker.password": "x"}), "'broker.password' may not be"),
                (10, key.doc(dev, 10, {"outbox.path": "/tmp/x"}), "may not be set remotely"),
                (11, key.doc(dev, 11, {"log_level": "chatty"}), "invalid config: log_level"),
            ]
            for version, doc, reason in cases:
                n = len(ctl.reports)
                await ctl.push_config(doc)
                await eventually(lambda n=n: len(ctl.reports) > n, 30, f"report on {reason}")
                r = ctl.reports[n]
                assert (r.version, r.status) == (version, "rejected"), (r, reason)
                assert r.reason is not None and reason in r.reason, (r.reason, reason)
                assert r.active_version == 2
            # Not parseable at all: no version to report on; logged, nothing changes.
            await ctl.push_config(b"{not json")
            # The old config is still in force, on disk and live.
            tail = await recorded_after(ctl, 3)
            assert all(g >= 2000 for g in gaps_ms(tail)[-2:]), gaps_ms(tail)
            st = state(agent)
            assert st.active is not None and st.active.version == 2 and st.committed
            assert st.good == st.active and st.max_version == 2

            # A restart keeps it; the retained v2 re-delivered is a no-op (no second report).
            await ctl.push_config(key.doc(dev, 2, SLOW, issued_at=st.active.issued_at))
            assert agent.stop() == 0
            agent.start()
            await ctl.online()
            tail = await recorded_after(ctl, 3)
            assert all(g >= 2000 for g in gaps_ms(tail)[-2:]), gaps_ms(tail)
            assert [r.status for r in ctl.reports if r.version == 2].count("applied") == 1
    finally:
        agent.stop()
    log = agent.log()
    assert "rejected: bad signature" in log
    # log_level "debug" in version 1 took effect live (the file says info).
    assert " DEBUG fleet_edge.mqtt: Sending PUBLISH" in log


async def test_wrong_broker_reverts_within_probation_and_reports_after_reconnecting(
    broker: Broker, tmp_path: Path, key: SigningKey, gps: SimDevice
) -> None:
    agent = AgentProcess(broker, tmp_path, key, remote={"probation_s": 4.0}).start()
    dev = agent.device_id
    try:
        async with Control(broker, dev) as ctl:
            await ctl.online()
            await ctl.push_config(key.doc(dev, 1, SLOW))
            await ctl.report(1, "applied")
            await eventually(lambda: state(agent).committed, 30, "v1 passed probation")

            for version, broker_keys in (
                (2, {"broker.host": "wrong-broker.invalid"}),  # no such host
                (3, {"broker.port": free_port()}),  # nobody listens there
            ):
                await ctl.push_config(key.doc(dev, version, {**SLOW, **broker_keys}))
                reverted = await ctl.report(version, "reverted", within_s=60)
                assert reverted.active_version == 1
                assert reverted.reason is not None and "no cloud round trip within 4 s" in (
                    reverted.reason
                )
                # Never reported applied: the agent never reached the new broker.
                assert not [
                    r for r in ctl.reports if r.version == version and r.status == "applied"
                ]
                st = state(agent)
                assert st.active is not None and st.active.version == 1 and st.committed
                assert st.max_version == version and st.reports == []
                # Back on the right broker: telemetry flows, acks delete the rows.
                await recorded_after(ctl, 2)

            # The retained v3 re-delivered on that reconnect was not applied again,
            # and a good config after a revert is applied as usual.
            await ctl.push_config(key.doc(dev, 4, {"sampler.min_interval_s": 0.0}))
            assert (await ctl.report(4, "applied")).active_version == 4
            assert min(gaps_ms(await recorded_after(ctl, 6))) < 1000
    finally:
        agent.stop()
    log = agent.log()
    assert log.count("reverted to version 1") == 2, log[-3000:]


async def test_obd_pid_set_applied_live(broker: Broker, tmp_path: Path, key: SigningKey) -> None:
    gps = SimDevice("gps", tmp_path / "gps0", "--hz", "2", "--seed", "6").plug()
    elm = SimDevice("elm327", tmp_path / "elm0", "--seed", "6", route_start_ms=gps.route_start_ms)
    elm.plug()
    obd = {"enabled": True, "port": str(tmp_path / "elm0"), "ecu_silent_s": 2.0, "max_age_s": 3.0}
    agent = AgentProcess(broker, tmp_path, key, obd=obd).start()
    dev = agent.device_id

    def engine(after: int) -> list[dict[str, object]]:
        return [f.eng.model_dump(exclude_none=True) for f in ctl.fixes
                if f.seq > after and f.eng is not None and f.eng.rpm is not None]  # fmt: skip

    try:
        async with Control(broker, dev) as ctl:
            await eventually(lambda: any("ect" in e for e in engine(0)), 60, "coolant temp")
            await ctl.push_config(key.doc(dev, 1, {"obd.pids": ["rpm"], "obd.pids_per_s": 5}))
            await ctl.report(1, "applied")
            last = max(f.seq for f in ctl.fixes)
            # Values read before the change age out after max_age_s; then only RPM is polled.
            await eventually(
                lambda: len(engine(last)) >= 3 and all("ect" not in e for e in engine(last)[-3:]),
                60,
                "fixes with rpm and without coolant temp",
            )
    finally:
        agent.stop()
        elm.close()
        gps.close()


async def test_probation_survives_a_kill_and_the_revert_is_reported_after_it(
    broker: Broker, tmp_path: Path, key: SigningKey
) -> None:
    # No receiver needed: the round trips here are config reports, not telemetry acks.
    agent = AgentProcess(broker, tmp_path, key, remote={"probation_s": 4.0}).start()
    dev = agent.device_id
    try:
        async with Control(broker, dev) as ctl:
            await ctl.online()
            await ctl.push_config(key.doc(dev, 1, {"broker.port": free_port()}))

            def on_probation() -> bool:
                try:
                    st = state(agent)
                except FileNotFoundError:
                    return False
                return st.active is not None and st.active.version == 1 and not st.committed

            await eventually(on_probation, 30, "v1 stored, on probation")
            agent.kill9()  # before the window ends
            agent.start()  # starts with v1 in force: the wrong port
            reverted = await ctl.report(1, "reverted", within_s=60)
            assert reverted.active_version == 0  # no good remote config: the local file
            # The owed report leaves the state file once the agent has its PUBACK,
            # which may be just after we see the report.
            await eventually(lambda: state(agent).reports == [], 10, "the owed report cleared")
            st = state(agent)
            assert st.active is None and st.committed and st.max_version == 1
            await ctl.online()
    finally:
        agent.stop()
    assert agent.log().count("reverted to version 0") == 1
