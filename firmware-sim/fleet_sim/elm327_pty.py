"""An ELM327 OBD-II adapter with a vehicle behind it, on a pseudo-terminal.

The simulator holds the master side of a pty; the agent opens the slave side
as its "serial port" (optionally behind a stable symlink). It reads commands
ending in CR and answers each as ``Elm327Emulator`` says, after advancing the
vehicle to the wall clock, so the engine is always where the route is now.

SIGUSR1 toggles the ignition (forced off / back to the route's own state):
the ECU then falls silent (SEARCHING... UNABLE TO CONNECT, NO DATA) while the
adapter itself keeps answering AT commands, as in a real car.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from fleet_sim.elm327 import DEFAULT_VIN, Elm327Emulator
from fleet_sim.gps_pty import PtyPort, _setup_error, _Stop, make_link, remove_link
from fleet_sim.vehicle import Vehicle

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64  # an ELM327 discards longer input lines
CLONE_DELAY_S = (0.15, 0.4)  # how late a slow clone answers


@dataclass(frozen=True)
class ElmOptions:
    seed: int = 1
    hz: int = 1
    route_start_ms: int | None = None
    link: Path | None = None
    clone: bool = False
    vin: str = DEFAULT_VIN
    dtcs: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    ignition_off: bool = False  # start with the ignition forced off


@dataclass
class ElmStats:
    requests: int = 0
    ignition_toggles: int = 0
    overlong: int = 0
    log: list[str] = field(default_factory=list)


def run_elm327(opts: ElmOptions, out: TextIO = sys.stdout) -> ElmStats:
    """Serve until SIGTERM/SIGINT/SIGHUP; the pty path is the first line printed."""
    stats = ElmStats()
    stop = _Stop()
    toggles: list[int] = []

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        toggles.append(signum)

    old_usr1 = signal.signal(signal.SIGUSR1, on_usr1)
    port = PtyPort()
    linked = False
    try:
        if opts.link is not None:
            try:
                make_link(opts.link, port.path)
            except OSError as e:
                raise _setup_error(f"create --link {opts.link}", e) from None
            linked = True
        vehicle = Vehicle(opts.seed, opts.hz, opts.route_start_ms)
        vehicle.forced_off = opts.ignition_off
        emu = Elm327Emulator(
            clone=opts.clone, vin=opts.vin, stored=list(opts.dtcs), pending=list(opts.pending)
        )
        print(port.path, file=out, flush=True)
        log.info(
            "elm327 on %s%s, seed %d, %s",
            port.path,
            f" ({opts.link})" if opts.link else "",
            opts.seed,
            "quirky clone" if opts.clone else "genuine",
        )
        _serve(port, stop, vehicle, emu, toggles, stats, random.Random(opts.seed))
        log.info("elm327 stopped after %d requests", stats.requests)
    finally:
        if linked and opts.link is not None:
            remove_link(opts.link, port.path)
        port.close()
        signal.signal(signal.SIGUSR1, old_usr1)
        stop.close()
    return stats


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _serve(
    port: PtyPort,
    stop: _Stop,
    vehicle: Vehicle,
    emu: Elm327Emulator,
    toggles: list[int],
    stats: ElmStats,
    rng: random.Random,
) -> None:
    buf = bytearray()
    while not stop.requested:
        try:
            readable, _, _ = select.select([stop.rfd, port.master], [], [], 1.0)
        except InterruptedError:
            readable = []
        if stop.rfd in readable:
            stop.drain()
        while toggles:
            toggles.pop()
            vehicle.forced_off = not vehicle.forced_off
            stats.ignition_toggles += 1
            log.info("ignition forced %s", "off" if vehicle.forced_off else "back to the route")
        state = vehicle.advance_to(_now_ms())
        if port.master not in readable:
            continue
        try:
            data = os.read(port.master, 1024)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EIO):
                continue
            raise
        buf += data
        while b"\r" in buf:
            line, _, rest = bytes(buf).partition(b"\r")
            buf[:] = rest
            if len(line) > MAX_COMMAND_BYTES:
                stats.overlong += 1
                reply = "?\r\r>"
            else:
                stats.requests += 1
                reply = emu.handle(line.decode("ascii", "replace"), state)
            if emu.clone:
                time.sleep(rng.uniform(*CLONE_DELAY_S))
            _write_all(port.master, reply.encode("ascii"))
        if len(buf) > MAX_COMMAND_BYTES:
            buf.clear()
            stats.overlong += 1


def _write_all(fd: int, data: bytes) -> None:
    """Answers are small; a reader that does not read for seconds loses the rest."""
    deadline = time.monotonic() + 2.0
    view = memoryview(data)
    while view and time.monotonic() < deadline:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            time.sleep(0.005)
