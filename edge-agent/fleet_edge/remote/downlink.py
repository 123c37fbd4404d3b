"""The downlink task: config documents and commands in, reports and results out.

The publisher calls ``received``/``session_up``/``cloud_ack`` from its MQTT
session (they never block); one task handles the messages in arrival order
and another sends what is waiting whenever a connection is up. Everything the
cloud is owed (applied/reverted reports, command results) is stored before it
is sent and forgotten only after the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import logging

from fleet_edge.config import AgentConfig
from fleet_edge.logs import Every
from fleet_edge.remote.commands import CommandRunner
from fleet_edge.remote.config_keeper import ConfigKeeper
from fleet_edge.remote.runtime import Runtime
from fleet_edge.remote.state import ConfigState
from fleet_wire import Down, Up, encode_json

log = logging.getLogger(__name__)

# Messages waiting to be handled; the cloud sends a handful a day, so a full
# inbox means a misbehaving sender: the excess is dropped (and logged).
INBOX_MAX = 64
RETRY_S = 2.0


class Downlink:
    def __init__(
        self, local: AgentConfig, state: ConfigState, cfg: AgentConfig, runtime: Runtime
    ) -> None:
        self._runtime = runtime
        self._outgoing = asyncio.Event()
        self.config = ConfigKeeper(local, state, cfg, runtime, self._outgoing)
        self.commands = CommandRunner(local, runtime, self._outgoing)
        self._inbox: asyncio.Queue[tuple[Down, bytes, str | None]] = asyncio.Queue(INBOX_MAX)
        self._round_trip = asyncio.Event()  # a cloud ack arrived
        self._probation_over: asyncio.Queue[int] = asyncio.Queue()
        self._full_warning = Every(60.0)

    # --- called by the publisher (never block) -----------------------------------

    def received(self, kind: Down, payload: bytes, content_type: str | None) -> None:
        try:
            self._inbox.put_nowait((kind, payload, content_type))
        except asyncio.QueueFull:
            if self._full_warning.due():
                log.warning("downlink inbox full: %s message dropped", kind.value)

    def session_up(self) -> None:
        self._outgoing.set()

    def cloud_ack(self) -> None:
        if self.config.on_probation:
            self._round_trip.set()

    # --- the task --------------------------------------------------------------------

    async def run(self) -> None:
        self.config.start(self._probation_over)
        self.commands.start()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._handle_messages(), name="downlink-in")
            tg.create_task(self._handle_probation(), name="downlink-probation")
            tg.create_task(self._handle_round_trips(), name="downlink-round-trips")
            tg.create_task(self._send(), name="downlink-out")

    async def _handle_messages(self) -> None:
        while True:
            kind, payload, content_type = await self._inbox.get()
            try:
                if kind is Down.CONFIG:
                    await self.config.handle(payload, content_type)
                else:
                    await self.commands.handle(payload, content_type)
            except Exception:
                # A bug met by one message must not stop the telemetry.
                log.exception("%s message not handled", kind.value)

    async def _handle_round_trips(self) -> None:
        while True:
            await self._round_trip.wait()
            self._round_trip.clear()
            await self.config.round_trip()

    async def _handle_probation(self) -> None:
        while True:
            await self.config.probation_over(await self._probation_over.get())

    async def _send(self) -> None:
        while True:
            await self._outgoing.wait()
            self._outgoing.clear()
            if not await self._send_pending() and self._runtime.session_broker() is not None:
                await asyncio.sleep(RETRY_S)  # connected but not PUBACKed in time
                self._outgoing.set()

    async def _send_pending(self) -> bool:
        """Send what may go now; False when a publish failed."""
        while (report := self.config.next_report()) is not None:
            if not await self._runtime.publish_up(Up.CONFIG, encode_json(report)):
                return False
            await self.config.reported(report)
        while (result := self.commands.next_result()) is not None:
            if not await self._runtime.publish_up(Up.CMD, encode_json(result)):
                return False
            await self.commands.reported(result)
        return True
