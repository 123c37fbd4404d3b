"""The cloud's control side, played by the test, and a real ``fleet-agent run`` to talk to.

``Control`` connects to the test broker with the observer account, acks the
device's telemetry like ingest does (while ``acking``), records its config
reports, command results and statuses, and publishes signed documents on
``down/config`` (retained, as the cloud does) and commands on ``down/cmd``.
``AgentProcess`` writes a TOML file and runs the agent as systemd would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt

from fleet_wire import (
    Ack,
    Down,
    Fix,
    Status,
    decode_model,
    decode_telemetry,
    down_topic,
    encode_json,
    seq_ranges,
)
from fleet_wire.remote import CommandResult, ConfigReport, public_key_b64, sign
from fleet_wire.topics import parse_up_topic
from tests.edge.waiting import eventually
from tests.harness import Broker, Proc, tool


def now_ms() -> int:
    return int(time.time() * 1000)


class SigningKey:
    """The cloud's config key (a 32-byte Ed25519 seed), as the tests hold it."""

    def __init__(self) -> None:
        self.seed = os.urandom(32)
        self.public = public_key_b64(self.seed)

    def doc(
        self, device_id: str, version: int, config: dict[str, Any], issued_at: int | None = None
    ) -> dict[str, Any]:
        issued_at = issued_at or now_ms()
        return {
            "v": 1,
            "device_id": device_id,
            "version": version,
            "issued_at": issued_at,
            "config": config,
            "sig": sign(self.seed, device_id, version, issued_at, config),
        }


class Control:
    def __init__(self, broker: Broker, device_id: str, *, acking: bool = True) -> None:
        self.device_id = device_id
        self.acking = acking
        self.reports: list[ConfigReport] = []
        self.results: list[CommandResult] = []
        self.fixes: list[Fix] = []
        self.statuses: list[Status] = []
        user, password = broker.observer
        self._client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=f"test-control-{uuid.uuid4().hex[:8]}",
            username=user,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Control:
        await self._client.__aenter__()
        await self._client.subscribe(f"fleet/v1/{self.device_id}/up/#", qos=1)
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def _receive(self) -> None:
        async for m in self._client.messages:
            assert isinstance(m.payload, bytes)
            if not m.payload:
                continue
            ct = getattr(m.properties, "ContentType", None)
            kind = parse_up_topic(m.topic.value).kind
            if kind == "config":
                self.reports.append(decode_model(m.payload, ConfigReport, ct))
            elif kind == "cmd":
                self.results.append(decode_model(m.payload, CommandResult, ct))
            elif kind == "status":
                self.statuses.append(decode_model(m.payload, Status, ct))
            elif kind == "telemetry":
                boot, fixes, bad = decode_telemetry(m.payload, ct)
                assert not bad
                self.fixes.extend(fixes)
                if self.acking:
                    ack = Ack(boot=boot, seqs=seq_ranges([f.seq for f in fixes]))
                    await self._client.publish(
                        down_topic(self.device_id, Down.ACK), encode_json(ack), qos=1
                    )

    async def push_config(self, doc: dict[str, Any] | bytes) -> None:
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        await self._client.publish(
            down_topic(self.device_id, Down.CONFIG), payload, qos=1, retain=True
        )

    async def command(self, kind: str, args: dict[str, Any] | None = None,
                      expires_in_s: float = 60, cmd_id: str | None = None) -> str:  # fmt: skip
        cmd_id = cmd_id or uuid.uuid4().hex[:12]
        cmd = {"v": 1, "id": cmd_id, "kind": kind, "args": args or {},
               "expires_at": now_ms() + int(expires_in_s * 1000)}  # fmt: skip
        await self._client.publish(
            down_topic(self.device_id, Down.CMD), json.dumps(cmd).encode(), qos=1
        )
        return cmd_id

    async def report(self, version: int, status: str, within_s: float = 30) -> ConfigReport:
        def find() -> ConfigReport | None:
            return next(
                (r for r in self.reports if r.version == version and r.status == status), None
            )

        await eventually(lambda: find() is not None, within_s, f"{status} report of v{version}")
        found = find()
        assert found is not None
        return found

    async def result(self, cmd_id: str, n: int = 1, within_s: float = 30) -> CommandResult:
        """The n-th result received for ``cmd_id``."""

        def mine() -> list[CommandResult]:
            return [r for r in self.results if r.id == cmd_id]

        await eventually(lambda: len(mine()) >= n, within_s, f"result {n} of command {cmd_id}")
        return mine()[n - 1]

    async def online(self, within_s: float = 30) -> None:
        n = len(self.statuses)
        await eventually(
            lambda: any(s.online for s in self.statuses[n:]), within_s, "a status online:true"
        )


class AgentProcess:
    """``fleet-agent run`` on a TOML file, started and killed like systemd would."""

    def __init__(self, broker: Broker, tmp: Path, key: SigningKey | None, **sections: Any) -> None:
        self.tmp = tmp
        self.device_id = f"cfg-{uuid.uuid4().hex[:10]}"
        self.config = tmp / "agent.toml"
        self.state_dir = tmp / "state"
        self.outbox = tmp / "outbox.db"
        self.proc: Proc | None = None
        conf: dict[str, dict[str, Any]] = {
            "broker": {"host": broker.host, "port": broker.port,
                       "password": broker.device_password(self.device_id),
                       "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            "gps": {"port": str(tmp / "gps0"), "reopen_max_s": 0.5},
            "outbox": {"path": str(self.outbox), "commit_interval_s": 0.2},
            "sampler": {"min_interval_s": 0, "min_distance_m": 0, "on_motion": False},
            "publisher": {"status_interval_s": 1.0, "ack_timeout_s": 5.0},
            "remote": {"state_dir": str(self.state_dir), "probation_s": 30.0,
                       **({"public_key": key.public} if key else {})},
        }  # fmt: skip
        for name, values in sections.items():
            conf.setdefault(name, {}).update(values)
        lines = [f'device_id = "{self.device_id}"']
        for name, values in conf.items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def gps_link(self) -> Path:
        return self.tmp / "gps0"

    def start(self) -> AgentProcess:
        self.proc = Proc(
            [tool("fleet-agent"), "run", "--config", str(self.config)], self.tmp / "agent.log"
        ).start()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc is not None else None

    def log(self) -> str:
        return self.proc.log() if self.proc is not None else ""


def gaps_ms(fixes: list[Fix]) -> list[int]:
    """Fix-time gaps between consecutive recorded fixes (by seq, repeats merged)."""
    by_seq = sorted({f.seq: f for f in fixes}.values(), key=lambda f: f.seq)
    return [b.t - a.t for a, b in itertools.pairwise(by_seq)]


async def recorded_after(ctl: Control, n: int) -> list[Fix]:
    """The next ``n`` fixes recorded from now on (seqs above everything received so far)."""
    last = max((f.seq for f in ctl.fixes), default=0)
    await eventually(
        lambda: len({f.seq for f in ctl.fixes if f.seq > last}) >= n, 60, f"{n} new fixes"
    )
    return [f for f in ctl.fixes if f.seq > last]
