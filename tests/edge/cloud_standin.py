"""The cloud's side of the protocol, played by the test on the real broker.

It subscribes to telemetry like an ingest worker, decodes every batch with
fleet_wire, and publishes the end-to-end ack the real ingest sends after its
database commit, but only while ``acking`` is on. It also records the
device's retained status documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

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
from fleet_wire.topics import parse_up_topic


@dataclass
class Received:
    boot: int
    fixes: list[Fix]
    at: float  # monotonic receive time
    content_type: str | None

    @property
    def seqs(self) -> list[int]:
        return [f.seq for f in self.fixes]


class CloudStandIn:
    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        *,
        acking: bool = True,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """credentials: (username, password) of an account that may subscribe to
        device traffic and publish acks, e.g. the test broker's ``observer``."""
        self.device_id = device_id
        self.acking = acking
        self.batches: list[Received] = []
        self.statuses: list[Status] = []
        self.acks_sent = 0
        self.disconnected = False
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=f"test-cloud-{uuid.uuid4().hex[:8]}",
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
            protocol=aiomqtt.ProtocolVersion.V5,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CloudStandIn:
        await self._client.__aenter__()
        await self._client.subscribe("fleet/v1/+/up/telemetry", qos=1)
        await self._client.subscribe(f"fleet/v1/{self.device_id}/up/status", qos=1)
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):  # the broker may be gone (fault tests)
            await self._client.__aexit__(None, None, None)

    async def _receive(self) -> None:
        try:
            await self._receive_until_disconnected()
        except aiomqtt.MqttError:
            self.disconnected = True

    async def _receive_until_disconnected(self) -> None:
        async for m in self._client.messages:
            assert isinstance(m.payload, bytes)
            ct = getattr(m.properties, "ContentType", None)
            topic = parse_up_topic(m.topic.value)
            if topic.device_id != self.device_id:
                continue
            if topic.kind == "status":
                self.statuses.append(decode_model(m.payload, Status, ct))
                continue
            boot, fixes, bad = decode_telemetry(m.payload, ct)
            assert not bad, [b.reason for b in bad]
            self.batches.append(Received(boot, fixes, time.monotonic(), ct))
            if self.acking:
                await self.ack(boot, [f.seq for f in fixes])

    async def ack(self, boot: int, seqs: list[int]) -> None:
        ack = Ack(boot=boot, seqs=seq_ranges(seqs))
        await self._client.publish(down_topic(self.device_id, Down.ACK), encode_json(ack), qos=1)
        self.acks_sent += 1

    async def ack_everything_received(self) -> None:
        by_boot: dict[int, set[int]] = {}
        for b in self.batches:
            by_boot.setdefault(b.boot, set()).update(b.seqs)
        for boot, seqs in by_boot.items():
            await self.ack(boot, sorted(seqs))

    def seqs(self) -> list[int]:
        """Every seq received, in arrival order, repeats included."""
        return [s for b in self.batches for s in b.seqs]

    def first_arrival(self) -> dict[int, float]:
        first: dict[int, float] = {}
        for b in self.batches:
            for s in b.seqs:
                first.setdefault(s, b.at)
        return first

    def last_status(self) -> Status | None:
        return self.statuses[-1] if self.statuses else None
