"""The firmware simulators as the tests run them: real processes on real pseudo-terminals.

Unplugging a simulated device stops its process (the pty closes under the
reader, the --link symlink is removed); re-plugging starts a new one on a new
pty behind the same link, as udev does with /dev/serial/by-id/... Passing the
same route start keeps the drive continuous across the replug.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.harness import Proc, tool, wait_until


class SimDevice:
    def __init__(self, kind: str, link: Path, *args: str, route_start_ms: int | None = None):
        self.kind = kind
        self.link = link
        self.args = list(args)
        self.route_start_ms = route_start_ms or (time.time_ns() // 1_000_000 // 1000) * 1000
        self.proc: Proc | None = None
        self.starts = 0

    def plug(self, *extra: str) -> SimDevice:
        self.starts += 1
        argv = [tool("fleet-sim"), self.kind, "--pty", "--link", str(self.link),
                "--route-start", str(self.route_start_ms), *self.args, *extra]  # fmt: skip
        log = self.link.with_name(f"{self.link.name}.{self.starts}.log")
        self.proc = Proc(argv, log).start()
        wait_until(lambda: os.path.islink(self.link) or not self.alive(), 20, f"{self.kind} link")
        if not self.alive():
            raise RuntimeError(f"fleet-sim {self.kind} exited:\n{self.proc.log()}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def unplug(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        wait_until(lambda: not os.path.lexists(self.link), 10, f"{self.kind} link removed")

    def toggle_ignition(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR1)

    def log(self) -> str:
        return self.proc.log() if self.proc else ""

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
