"""systemd's notify protocol (sd_notify(3)) with the standard library only.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or an abstract
socket name starting with '@') and, with ``WatchdogSec=``, ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``). The service sends newline-separated ``KEY=value``
datagrams: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the agent
runs the same from a shell, a test or a unit. A send never raises and never
blocks: the notify socket is a local datagram socket, and a message it cannot
take now is dropped (and counted) rather than stall the event loop.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """NOTIFY_SOCKET's value as an AF_UNIX address ('@name' is the abstract namespace)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec in seconds when the watchdog is on *for this process*, else None.

    As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be our pid (the
    variables are inherited by children, who must not ping in our place).
    """
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
        return None
    return value / 1_000_000 if value > 0 else None


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._warned = False
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False if not sent."""
        if self._sock is None or self.address is None:
            return False
        # A newline inside a value would start a new field: keep STATUS one line.
        data = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            self._sock.sendto(data, socket_address(self.address))
        except OSError as e:  # full queue, socket gone (systemd restarting): try next time
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning("systemd notify socket %s: %s", self.address, e)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
