"""A GPS receiver stand-in: a pseudo-terminal behind a stable symlink, fed by the test.

Unplugging closes the pty (the agent's reads fail with EIO, and the device node
disappears) and removes the symlink; re-plugging creates a new pty and points
the same symlink at it: what udev does with /dev/serial/by-id/... when a USB
receiver goes and comes back. (Removing the link also matters because pty
numbers are reused at once, by any process: a stale link could otherwise lead
to somebody else's pty.)
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
import tty
from pathlib import Path


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class PtyGps:
    def __init__(self, link: Path, *, plugged: bool = True) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        if plugged:
            self.plug()

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> None:
        assert self.master is None
        master, slave = os.openpty()
        # Raw mode: no echo back to the master, no line editing of the NMEA.
        tty.setraw(slave)
        fl = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)
        self.master, self.slave = master, slave

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        if self.master is not None:
            os.close(self.master)
        if self.slave is not None:
            os.close(self.slave)
        self.master = self.slave = None

    async def write(self, data: bytes, give_up_s: float = 10.0) -> None:
        """Write everything, yielding to the loop while the tty buffer is full."""
        deadline = time.monotonic() + give_up_s
        view = memoryview(data)
        while view:
            assert self.master is not None, "unplugged"
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("nobody reads the pty") from None
                await asyncio.sleep(0.01)

    def close(self) -> None:
        self.unplug()
