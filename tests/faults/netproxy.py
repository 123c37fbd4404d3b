"""A fault-injecting TCP proxy between an agent and the broker: the agent's "cellular link".

It runs its own asyncio loop on a thread, so synchronous test code and
benchmarks drive it with plain method calls:

- ``cut()``: abort every connection and stop listening (new connections are
  refused), as when the modem loses the network; ``restore()`` listens again.
- ``set_rate(bytes_per_s)``: each direction becomes a link of that capacity,
  shared by all connections, with a queue in front of it (a chunk leaves when
  the link has finished sending the previous ones), like a cellular uplink.
- ``up_bytes`` / ``down_bytes``: bytes carried agent -> broker and back (MQTT
  bytes; TCP/IP headers are not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.harness import free_port

T = TypeVar("T")
CHUNK = 4096


class _Link:
    """One direction's capacity: serialisation delay of each chunk, queued behind the last."""

    def __init__(self) -> None:
        self.rate: float | None = None  # bytes/s; None = unlimited
        self._free_at = 0.0

    async def carry(self, n: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        start = max(now, self._free_at)
        self._free_at = start + n / self.rate
        await asyncio.sleep(self._free_at - now)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.up_bytes = 0
        self.down_bytes = 0
        self.connections = 0  # accepted while not cut
        self._up = _Link()
        self._down = _Link()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- control, from any thread -----------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def set_rate(self, bytes_per_s: float | None) -> None:
        self._up.rate = self._down.rate = bytes_per_s

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- inside the proxy's loop ---------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, self._up, "up_bytes"),
                self._pump(up_reader, writer, self._down, "down_bytes"),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, counter: str
    ) -> None:
        try:
            while data := await src.read(CHUNK):
                await link.carry(len(data))
                dst.write(data)
                await dst.drain()
                setattr(self, counter, getattr(self, counter) + len(data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()  # one side gone: the other goes too, as a dead link would
