"""kill -9 the agent at random moments while signed configs stream in.

After every kill the state file is exactly one whole document (the old one or
a new one, signature intact), never torn, and the version in force never goes
backwards. The agent is restarted as systemd would and applies the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

from fleet_edge.remote.state import CONFIG_STATE_FILE, ConfigState
from fleet_wire.remote import verify
from tests.edge.waiting import eventually
from tests.harness import Broker
from tests.remote_agent.control import AgentProcess, Control, SigningKey

KILLS = 25


def read_state(agent: AgentProcess) -> ConfigState | None:
    path = agent.state_dir / CONFIG_STATE_FILE
    if not path.exists():
        return None
    return ConfigState.model_validate(json.loads(path.read_bytes()))  # raises if torn


async def test_kill9_while_configs_stream_in_leaves_old_or_new_state(
    broker: Broker, tmp_path: Path
) -> None:
    key = SigningKey()
    agent = AgentProcess(broker, tmp_path, key).start()
    dev = agent.device_id
    rng = random.Random(8)
    pushed: dict[int, dict[str, object]] = {}
    applied_seen = 0

    async def stream(ctl: Control) -> None:
        version = 0
        while True:
            version += 1
            doc = key.doc(dev, version, {"sampler.min_interval_s": float(version % 7),
                                         "sampler.max_interval_s": 60.0 + version})  # fmt: skip
            pushed[version] = doc
            await ctl.push_config(doc)
            await asyncio.sleep(rng.uniform(0.01, 0.15))

    try:
        async with Control(broker, dev) as ctl:
            await ctl.online()
            feeder = asyncio.create_task(stream(ctl))
            try:
                for _ in range(KILLS):
                    await eventually(lambda: bool(ctl.reports), 30, "a report")
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                    agent.kill9()
                    st = read_state(agent)
                    assert st is not None and st.active is not None
                    v = st.active.version
                    assert st.active.model_dump() == {**pushed[v], "v": 1}  # whole, as sent
                    assert verify(key.public, st.active)
                    assert v >= applied_seen  # never backwards
                    applied_seen = v
                    agent.start()
                    ctl.reports.clear()
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
            # The feeder's last push may have been cancelled before it reached
            # the broker: one more, sent whole, is the version that must win.
            last = max(pushed) + 1
            pushed[last] = key.doc(dev, last, {"sampler.min_interval_s": 1.0})
            await ctl.push_config(pushed[last])
            await ctl.report(last, "applied", within_s=60)
            await eventually(
                lambda: (s := read_state(agent)) is not None and s.committed
                and s.active is not None and s.active.version == last,
                30, "the last version committed",
            )  # fmt: skip
    finally:
        agent.stop()
    assert applied_seen > 1
