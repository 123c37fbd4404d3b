"""One real agent and its simulated receiver, as processes a fault test can kill.

``fleet-sim gps --pty`` writes NMEA at 10 Hz and logs every fix it wrote to
the oracle; ``fleet-agent run`` reads it, records every fix (sampler limits
off) and sends them through the broker (or a ``FaultProxy``) to the cloud.

What the tests check, after the last fault, is exact:

- committed: the outbox assigns seqs with SQLite AUTOINCREMENT inside the
  commit transaction, so what it ever committed is seqs 1..last_seq (a
  transaction cut short by kill -9 rolls its seqs back with its rows), minus
  the rows the cap dropped, which it counts. ``fleet-sim check --outbox``
  compares exactly that with the database, and every stored fix with the
  oracle (same fix time, same position).
- As independent evidence, ``snapshot()`` reads the outbox read-only just
  before each kill: every (seq, fix time) seen committed there must be in the
  database at the end.
- Fixes the receiver wrote while the agent was dead (or that the agent had
  read but not yet committed when killed, at most one commit interval) are
  not "committed": the port drops them, as a real UART would.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import Broker, CloudStack, Proc, db_fetch, tool, wait_until

GPS_HZ = 10


@dataclass
class AgentRig:
    tmp: Path
    broker_host: str
    broker_port: int
    seed: int = 11
    hz: int = GPS_HZ
    outbox_cfg: dict[str, Any] = field(default_factory=dict)
    publisher_cfg: dict[str, Any] = field(default_factory=dict)
    device: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex[:8]}")
    # Whose device account the agent logs in with (the connection itself may
    # go through a FaultProxy at broker_host:broker_port).
    broker: Broker | None = None
    gps: Proc | None = None
    agent: Proc | None = None
    starts: int = 0
    seen: dict[int, int] = field(default_factory=dict)  # seq -> fix time, from snapshots

    @property
    def link(self) -> Path:
        return self.tmp / "gps0"

    @property
    def oracle(self) -> Path:
        return self.tmp / "oracle.jsonl"

    @property
    def outbox(self) -> Path:
        return self.tmp / "outbox.db"

    @property
    def config(self) -> Path:
        return self.tmp / "agent.toml"

    def write_config(self) -> None:
        outbox = {"commit_interval_s": 0.5, **self.outbox_cfg}
        # ack_timeout 5 s: batches the broker lost (kill -9) come back sooner
        # than with the 30 s default; only the time to recover changes.
        publisher = {"ack_timeout_s": 5.0, "status_interval_s": 2.0, **self.publisher_cfg}
        lines = [
            f'device_id = "{self.device}"',
            "[broker]",
            f'host = "{self.broker_host}"',
            f"port = {self.broker_port}",
            *([f'password = "{self.broker.device_password(self.device)}"'] if self.broker else []),
            "reconnect_min_s = 0.2",
            "reconnect_max_s = 2.0",
            "[gps]",
            f'port = "{self.link}"',
            "reopen_max_s = 0.5",
            "[outbox]",
            f'path = "{self.outbox}"',
            *(f"{k} = {json.dumps(v)}" for k, v in outbox.items()),
            "[sampler]",
            "min_interval_s = 0",  # record every fix: the oracle is compared one for one
            "min_distance_m = 0",
            "[publisher]",
            *(f"{k} = {json.dumps(v)}" for k, v in publisher.items()),
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def start_gps(self) -> None:
        self.gps = Proc(
            [tool("fleet-sim"), "gps", "--pty", "--link", str(self.link), "--hz", str(self.hz),
             "--seed", str(self.seed), "--oracle", str(self.oracle)],
            self.tmp / "gps.log",
        ).start()  # fmt: skip
        wait_until(self.link.exists, 10, "the simulated receiver's pty")

    def start_agent(
        self, prefix: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        if not self.config.exists():
            self.write_config()
        self.starts += 1
        self.agent = Proc(
            [*(prefix or []), tool("fleet-agent"), "run", "--config", str(self.config)],
            self.tmp / "agent.log",
            env or {},
        ).start()

    def start(self) -> AgentRig:
        self.start_gps()
        self.start_agent()
        return self

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.snapshot()
        self.agent.kill9()

    def idle(self, seconds: float, every: float = 0.1) -> None:
        """Sleep, reading the outbox's committed rows every ``every`` s meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.snapshot()
            time.sleep(min(every, left))

    def snapshot(self) -> None:
        """Record what the outbox holds committed right now (read-only; the agent runs)."""
        if not self.outbox.exists():
            return
        try:
            db = sqlite3.connect(f"{self.outbox.resolve().as_uri()}?mode=ro", uri=True)
            try:
                # Only rows committed since the last look: cheap, so the test
                # does not starve the agent of CPU on a loaded machine.
                last = max(self.seen, default=0)
                rows = db.execute("SELECT seq, t FROM outbox WHERE seq > ?", (last,)).fetchall()
                self.seen.update(rows)
            finally:
                db.close()
        except sqlite3.Error:
            pass  # not created yet

    def depth(self) -> int:
        try:
            db = sqlite3.connect(f"{self.outbox.resolve().as_uri()}?mode=ro", uri=True)
            try:
                return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            finally:
                db.close()
        except sqlite3.Error:
            return -1

    def stored_count(self, dsn: str) -> int:
        rows = db_fetch(
            dsn, "SELECT count(*) AS n FROM positions WHERE device_id = $1", self.device
        )
        return int(rows[0]["n"])  # type: ignore[call-overload]

    def finish(self, timeout: float = 120) -> None:
        """Freeze the receiver, let the agent deliver everything, stop it with SIGTERM."""
        assert self.gps is not None and self.agent is not None
        self.gps.pause()
        time.sleep(1.5)  # the agent commits what it already read (commit interval 0.5 s)
        wait_until(lambda: self.depth() == 0, timeout, "the outbox to drain", every=0.5)
        self.snapshot()
        t0 = time.monotonic()
        rc = self.agent.stop(timeout=10)
        assert rc == 0, self.agent.log()[-3000:]
        assert time.monotonic() - t0 < 10
        self.gps.stop()

    def close(self) -> None:
        for p in (self.agent, self.gps):
            if p is not None:
                p.stop()

    def check(self, dsn: str, *, outbox: bool = True) -> dict[str, Any]:
        """``fleet-sim check --json`` against the oracle; returns the report with its exit code."""
        argv = [tool("fleet-sim"), "check", "--dsn", dsn, "--oracle", str(self.oracle),
                "--device", self.device, "--json"]  # fmt: skip
        if outbox:
            argv += ["--outbox", str(self.outbox)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        lines = p.stdout.strip().splitlines()
        assert lines, f"fleet-sim check printed nothing: {p.stderr}"
        report: dict[str, Any] = json.loads(lines[-1])
        report["exit_code"] = p.returncode
        report["text"] = "\n".join(lines[:-1])
        return report

    def assert_exactly_once(self, dsn: str) -> dict[str, Any]:
        """0 committed fixes lost, 0 stored twice; returns the checker's report."""
        report = self.check(dsn)
        tail = self.agent.log()[-3000:] if self.agent else ""
        msg = f"{report['text']}\n--- agent log tail ---\n{tail}"
        print(report["text"])
        assert report["missing"] == 0, msg
        assert report["duplicated"] == 0, msg
        assert report["unknown"] == 0 and report["mismatched"] == 0, msg
        assert report["out_of_order"] == 0, msg
        assert report["exit_code"] == 0, msg
        rows = db_fetch(dsn, "SELECT seq, (extract(epoch FROM fix_time) * 1000)::bigint AS t"
                        " FROM positions WHERE device_id = $1", self.device)  # fmt: skip
        stored = {int(r["seq"]): int(r["t"]) for r in rows}  # type: ignore[call-overload]
        lost = {s: t for s, t in self.seen.items() if stored.get(s) != t}
        assert not lost, f"committed (seen in the outbox) but not stored: {sorted(lost)[:20]}"
        return report


@dataclass
class FleetLoad:
    """``fleet-sim fleet``: lightweight vehicles on the same broker, with their own oracle."""

    tmp: Path
    broker_host: str
    broker_port: int
    count: int = 20
    prefix: str = field(default_factory=lambda: f"fl{uuid.uuid4().hex[:6]}")
    proc: Proc | None = None
    broker: Broker | None = None  # whose device accounts the vans log in with

    @property
    def oracle(self) -> Path:
        return self.tmp / "fleet-oracle.jsonl"

    def devices(self) -> list[str]:
        return [f"{self.prefix}-{i:04d}" for i in range(self.count)]

    def start(self, cloud: CloudStack) -> FleetLoad:
        for d in self.devices():
            cloud.register_vehicle(f"Load {d}", d)
        passwords = self.tmp / "fleet-passwords.json"
        passwords.write_text(
            json.dumps((self.broker or cloud.broker).device_passwords(self.devices()))
        )
        self.proc = Proc(
            [tool("fleet-sim"), "fleet", "--count", str(self.count), "--prefix", self.prefix,
             "--broker", f"{self.broker_host}:{self.broker_port}", "--hz", "2",
             "--oracle", str(self.oracle), "--resend-seconds", "5", "--status-seconds", "10",
             "--password-file", str(passwords)],
            self.tmp / "fleet.log",
        ).start()  # fmt: skip
        return self

    def finish(self, dsn: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until every fix due by now is stored, stop the fleet, check it."""
        assert self.proc is not None
        until = int(time.time() * 1000)
        argv = [tool("fleet-sim"), "check", "--dsn", dsn, "--oracle", str(self.oracle),
                "--until", str(until), "--json"]  # fmt: skip

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv, capture_output=True, text=True, timeout=120)

        wait_until(lambda: run().returncode == 0, timeout, "the fleet's fixes stored", every=2)
        self.proc.stop()
        p = run()
        report: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        report["exit_code"] = p.returncode
        report["text"] = p.stdout
        print(p.stdout)
        return report

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
