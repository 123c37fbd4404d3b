"""Commands on ``down/cmd`` against a real ``fleet-agent run``: results, expiry, confirmation,
once-only execution of a re-delivered id, and restart as systemd expects it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_edge.outbox import read_stats
from tests.edge.sims import SimDevice
from tests.edge.waiting import eventually
from tests.harness import Broker
from tests.remote_agent.control import AgentProcess, Control, gaps_ms, recorded_after


@pytest.fixture
def gps(tmp_path: Path) -> Iterator[SimDevice]:
    sim = SimDevice("gps", tmp_path / "gps0", "--hz", "5", "--seed", "4").plug()
    yield sim
    sim.close()


def depth(agent: AgentProcess) -> int:
    return read_stats(agent.outbox).depth


async def test_commands_expiry_confirmation_duplicates_and_restart(
    broker: Broker, tmp_path: Path, gps: SimDevice
) -> None:
    # No signing key: commands do not need one. The stand-in does not ack, so
    # the outbox only grows (until clear_outbox).
    agent = AgentProcess(broker, tmp_path, None).start()
    try:
        async with Control(broker, agent.device_id, acking=False) as ctl:
            await ctl.online()
            await eventually(lambda: agent.outbox.exists() and depth(agent) >= 10, 30, "fixes")

            # locate: the latest fix, recorded and sent.
            r = await ctl.result(await ctl.command("locate"))
            assert r.status == "done", r
            assert {"t", "lat", "lon"} <= set(r.result)
            assert 52.0 < r.result["lat"] < 53.0  # the simulator drives around Berlin
            await eventually(
                lambda: any(f.t == r.result["t"] for f in ctl.fixes), 30, "the located fix sent"
            )

            # Refused: no confirmation, bad arguments, expired; none of them runs.
            before = depth(agent)
            refused = [
                ("clear_outbox", {}, 60, "rejected", "args.confirm = true"),
                ("clear_outbox", {"confirm": "yes"}, 60, "rejected", "args.confirm = true"),
                ("clear_outbox", {"confirm": True}, -5, "expired", "expired"),
                ("set_interval", {"min_interval_s": -1}, 60, "rejected", "min_interval_s"),
                ("set_interval", {"every": 5}, 60, "rejected", "unknown argument 'every'"),
                ("set_interval", {}, 60, "rejected", "set_interval needs"),
                ("locate", {"now": True}, 60, "rejected", "locate takes no arguments"),
            ]
            for kind, args, expires_in, status, message in refused:
                res = await ctl.result(await ctl.command(kind, args, expires_in_s=expires_in))
                assert (res.status, kind) == (status, kind) and message in res.message, res
            assert depth(agent) >= before  # nothing was cleared
            assert read_stats(agent.outbox).dropped == 0

            # Confirmed: every unsent fix dropped and counted like cap drops.
            before = depth(agent)
            cid = await ctl.command("clear_outbox", {"confirm": True})
            cleared = await ctl.result(cid)
            assert cleared.status == "done", cleared
            dropped = cleared.result["dropped"]
            assert dropped >= before
            assert read_stats(agent.outbox).dropped == dropped
            await eventually(
                lambda: any(s.outbox and s.outbox.dropped == dropped for s in ctl.statuses),
                30,
                "the drops in the status",
            )

            # The same id again (a QoS 1 re-delivery): the stored result, not a second run.
            await eventually(lambda: depth(agent) >= 10, 30, "the outbox refilling")
            before = depth(agent)
            await ctl.command("clear_outbox", {"confirm": True}, cmd_id=cid)
            again = await ctl.result(cid, n=2)
            assert again == cleared
            assert depth(agent) >= before
            assert read_stats(agent.outbox).dropped == dropped

            # set_interval: live, fixes now 2 s apart.
            res = await ctl.result(await ctl.command("set_interval", {"min_interval_s": 2}))
            assert res.status == "done" and res.result["min_interval_s"] == 2.0, res
            tail = await recorded_after(ctl, 4)
            assert all(g >= 2000 for g in gaps_ms(tail)[-2:]), gaps_ms(tail)

            # restart: the result first, then a clean exit (systemd's Restart=always
            # starts the agent again); the re-delivered id does not restart it again.
            rid = await ctl.command("restart")
            res = await ctl.result(rid)
            assert (res.status, res.message) == ("done", "restarting")
            assert agent.proc is not None
            await eventually(lambda: not agent.proc.alive(), 30, "the agent to exit")  # type: ignore[union-attr]
            assert agent.proc.popen is not None and agent.proc.popen.returncode == 0
            agent.start()
            await ctl.online()
            await ctl.command("restart", cmd_id=rid)
            assert await ctl.result(rid, n=2) == res
            await ctl.result(await ctl.command("locate"))  # still running, still answering
            assert agent.proc.alive()
    finally:
        agent.stop()
