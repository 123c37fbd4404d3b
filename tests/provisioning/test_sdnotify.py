"""sd_notify and the watchdog, on a real unix datagram socket given as NOTIFY_SOCKET,
as systemd would give it.

How the "no ping while stuck" checks avoid timing: the test drops its own marker
datagrams into the same socket around the stuck period. Datagrams to one socket
queue in the order they were sent, so "no WATCHDOG=1 between the two markers" is
exact, whatever the machine's load. The stuck period only needs to be long
enough for pings to have had the chance (several WatchdogSec/2 periods).

SIGSTOP freezes every thread of the agent, so it alone cannot tell a ping earned
by the event loop from one sent by a timer thread. The in-process tests do: the
loop is blocked (or the outbox thread hung) while the rest of the process runs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet_edge.agent import Agent
from fleet_edge.config import load_config
from fleet_edge.outbox import Outbox
from fleet_edge.sdnotify import Notifier, socket_address, watchdog_interval_s
from tests.harness import Proc, free_port, tool, wait_until

WATCHDOG_USEC = 400_000  # a ping every 0.2 s
STUCK_S = 2.0  # ten ping periods


class NotifyListener:
    """The systemd side: a bound datagram socket and every message, in arrival order."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET: a path or '@abstract'
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode())

    def mark(self, name: str) -> None:
        """A marker in the same queue, from another sender, like the agent's datagrams."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(f"MARK={name}".encode(), socket_address(self.address))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def after(self, marker: str) -> list[str]:
        msgs = self.snapshot()
        return msgs[msgs.index(f"MARK={marker}") + 1 :] if f"MARK={marker}" in msgs else []

    def between(self, start: str, end: str) -> list[str]:
        msgs = self.snapshot()
        return msgs[msgs.index(f"MARK={start}") + 1 : msgs.index(f"MARK={end}")]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def pings(msgs: list[str]) -> int:
    return sum(m == "WATCHDOG=1" for m in msgs)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    nl = NotifyListener("@fleet-test-notify-" + secrets.token_hex(6))  # abstract namespace
    yield nl
    nl.close()


def agent_config(tmp_path: Path) -> Path:
    """An agent with nothing to talk to (no receiver, no broker): it must stay up and ping,
    since neither is a reason for systemd to restart it."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'device_id = "wd-{secrets.token_hex(3)}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[gps]\nport = "{tmp_path / "no-receiver"}"\n'
        f'[outbox]\npath = "{tmp_path / "outbox.db"}"\n'
    )
    return cfg


def test_agent_process_reports_ready_pings_and_stops_pinging_when_frozen(
    listener: NotifyListener, tmp_path: Path
) -> None:
    agent = Proc(
        [tool("fleet-agent"), "run", "--config", str(agent_config(tmp_path))],
        tmp_path / "agent.log",
        {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
    ).start()
    try:
        wait_until(lambda: pings(listener.snapshot()) >= 3, 30, "3 watchdog pings")
        msgs = listener.snapshot()
        ready = [i for i, m in enumerate(msgs) if m.startswith("READY=1")]
        assert ready and ready[0] < msgs.index("WATCHDOG=1"), msgs[:5]
        assert "\nSTATUS=" in msgs[ready[0]]  # systemctl status shows what the agent does

        os.kill(agent.pid, signal.SIGSTOP)
        wait_until(lambda: _state(agent.pid) == "T", 10, "the agent to be stopped")
        listener.mark("frozen")
        time.sleep(STUCK_S)
        listener.mark("thawed")
        os.kill(agent.pid, signal.SIGCONT)
        wait_until(lambda: pings(listener.after("thawed")) >= 2, 30, "pings after SIGCONT")
        assert pings(listener.between("frozen", "thawed")) == 0
        assert agent.alive()
    finally:
        code = agent.stop()
    assert code == 0, agent.log()
    wait_until(lambda: "STOPPING=1\nSTATUS=stopping" in listener.snapshot(), 10, "STOPPING=1")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def _wait(pred: Callable[[], bool], what: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_in_process_no_ping_while_the_loop_or_the_outbox_thread_is_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = NotifyListener(str(tmp_path / "notify.sock"))  # a filesystem socket this time
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    cfg = load_config(agent_config(tmp_path))
    outbox = await Outbox.open(cfg.outbox.path, cfg.outbox.max_rows, cfg.outbox.max_bytes)
    stop = asyncio.Event()
    run = asyncio.create_task(Agent(cfg, outbox, 1).run(stop))
    try:
        await _wait(lambda: pings(listener.snapshot()) >= 3, "3 watchdog pings")

        # 1. The event loop blocked; the process, its threads and the socket are fine.
        listener.mark("loop-blocked")
        time.sleep(STUCK_S)  # noqa: ASYNC251 - blocking the loop is the point
        listener.mark("loop-free")
        await _wait(lambda: pings(listener.after("loop-free")) >= 2, "pings after the block")
        assert pings(listener.between("loop-blocked", "loop-free")) == 0

        # 2. The loop runs, but the outbox's worker thread hangs (an SD card that
        # stopped answering): nothing is pinged once the watchdog has seen it.
        gate = threading.Event()
        outbox._executor.submit(gate.wait, 60)
        listener.mark("outbox-hung")
        await asyncio.sleep(STUCK_S)
        listener.mark("outbox-free")
        gate.set()
        await _wait(lambda: pings(listener.after("outbox-free")) >= 2, "pings after the hang")
        hung = listener.between("outbox-hung", "outbox-free")
        stuck = [i for i, m in enumerate(hung) if m.startswith("STATUS=stuck: outbox worker")]
        assert stuck, hung
        # A tick whose probe had answered just before the hang may still ping once.
        assert pings(hung[: stuck[0]]) <= 1 and pings(hung[stuck[0] :]) == 0, hung
        assert not run.done()
    finally:
        stop.set()
        await asyncio.wait_for(run, 15)
        await outbox.close()
        listener.close()
    assert "STOPPING=1\nSTATUS=stopping" in listener.snapshot()


def test_notifier_without_systemd_and_watchdog_rules(listener: NotifyListener) -> None:
    assert not Notifier.from_env({}).enabled and not Notifier(None).watchdog()
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address})
    assert n.ready("up\nand running") and n.watchdog()
    wait_until(lambda: len(listener.snapshot()) == 2, 10, "two datagrams")
    assert listener.snapshot() == ["READY=1\nSTATUS=up and running", "WATCHDOG=1"]
    n.close()
    # a socket nobody listens on: counted, never raised
    gone = Notifier("@fleet-test-nobody-" + secrets.token_hex(6))
    assert not gone.watchdog() and gone.dropped == 1
    pid = str(os.getpid())
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({}) is None
