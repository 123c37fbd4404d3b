"""The serial line to an ELM327, driven by the event loop: write a command, read to ``>``.

Like the GPS source, the port is pyserial in non-blocking mode with its fd on
``loop.add_reader``: no thread. The ELM327 is strictly request/response and
ends every answer with a ``>`` prompt; an answer that never ends (adapter
hung, wrong device) times out, and a vanished port raises LinkLost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import serial

READ_CHUNK = 1024
# Nothing the adapter prints for one request comes near this; past it the
# device is not an ELM327 (or the baud rate is wrong) and the answer is cut.
MAX_ANSWER_BYTES = 4096


class LinkLost(Exception):
    """The port went away (unplugged) or could not be opened."""


class ElmLink:
    def __init__(self, port: str, baud: int) -> None:
        self.port = port
        try:
            self._ser = serial.Serial(port, baudrate=baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            errno_ = getattr(e, "errno", None)
            raise LinkLost(os.strerror(errno_) if isinstance(errno_, int) else str(e)) from None
        self._loop = asyncio.get_running_loop()
        self._fd = self._ser.fileno()
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: str | None = None
        self._reading = True
        self._loop.add_reader(self._fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = self._ser.read(READ_CHUNK)
        except (serial.SerialException, OSError) as e:
            self._stop_reading()
            self._lost = "disconnected" if "returned no data" in str(e) else str(e)
            self._wake()
            return
        if not data:
            return
        if len(self._buf) < MAX_ANSWER_BYTES:
            self._buf += data[: MAX_ANSWER_BYTES - len(self._buf)]
        if b">" in data or len(self._buf) >= MAX_ANSWER_BYTES:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def request(self, command: str, wait_s: float) -> str:
        """Send one command; return what the adapter printed before its prompt.

        Raises LinkLost if the port vanished, TimeoutError if no prompt came.
        """
        if self._lost is not None:
            raise LinkLost(self._lost)
        self._buf.clear()  # stale bytes (a late answer to a timed-out request)
        try:
            self._ser.write(command.encode("ascii") + b"\r")
        except (serial.SerialException, OSError) as e:
            self._lost = str(e)
            raise LinkLost(self._lost) from None
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
        # cancellation that races with the answer, and the poller would not stop.
        try:
            async with asyncio.timeout(wait_s):
                while b">" not in self._buf and len(self._buf) < MAX_ANSWER_BYTES:
                    if self._lost is not None:
                        raise LinkLost(self._lost)
                    self._waiter = self._loop.create_future()
                    await self._waiter
        except TimeoutError:
            raise TimeoutError(f"no prompt after {command!r}") from None
        finally:
            self._waiter = None
        if self._lost is not None and b">" not in self._buf:
            raise LinkLost(self._lost)
        text = bytes(self._buf).split(b">", 1)[0]
        self._buf.clear()
        return text.decode("ascii", "replace")

    def close(self) -> None:
        self._stop_reading()
        if self._lost is None:
            self._lost = "closed"
        # Linux frees the fd even when close() fails (EIO after a hangup).
        with contextlib.suppress(OSError, serial.SerialException):
            self._ser.close()
