"""A GNSS receiver on a pseudo-terminal: what the agent's serial reader opens.

The simulator holds the master side and writes one epoch of NMEA per
1/hz seconds; the slave side is the "serial port" (``/dev/pts/N``, optionally
behind a stable symlink such as ``/tmp/gps0``). It behaves like a receiver on a
UART, not like a file:

- it keeps its own slave descriptor open, so a reader may close and reopen the
  port (the agent's unplug/replug handling) without the pty hanging up;
- output nobody reads is lost: the port buffers what a serial line discipline
  does (4 KiB) and an epoch that does not fit is dropped, never queued;
- fix time is the UTC wall clock of the epoch, so a reader's timestamps and
  the oracle's agree with the clock the rest of the system uses.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import random
import select
import signal
import struct
import sys
import termios
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from fleet_sim import nmea
from fleet_sim.faults import FaultInjector
from fleet_sim.oracle import Oracle
from fleet_sim.route import NO_FIX_HDOP, RouteSim, SimFix
from fleet_sim.sky import Sky, systems_for

log = logging.getLogger(__name__)

# What a serial port's line discipline holds for a reader that is not reading
# (N_TTY's buffer). The pty itself would swallow ~20 KiB more, i.e. tens of
# seconds of stale epochs, which no real port does.
PORT_BUFFER_BYTES = 4095
# An epoch due longer ago than this is skipped, not sent late: a receiver
# never emits an old epoch (this only happens if the process was stopped).
MAX_LATENESS_MS = 1_000


@dataclass(frozen=True)
class GpsOptions:
    hz: int = 1
    seed: int = 1
    talker: str = "GP"
    link: Path | None = None
    bad_checksum_rate: float = 0.0
    garbage_rate: float = 0.0
    no_fix: bool = False
    oracle: Path | None = None
    # Fix time of the route's first epoch (UTC ms); a time in the past
    # fast-forwards the drive. The ELM327 simulator given the same seed, rate
    # and start drives the same route, so GPS and ECU speeds agree.
    route_start_ms: int | None = None


@dataclass
class GpsStats:
    epochs: int = 0  # written to the port
    dropped: int = 0  # nobody was reading: no room in the port's buffer
    skipped: int = 0  # due while the process was not running


class PtyPort:
    """Master side of a pty whose slave side looks like a receiver's serial port."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        # Raw: no echo, no CR/LF translation, no line editing; bytes as on a UART.
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def queued(self) -> int:
        """Bytes written but not yet read by whoever has the port open."""
        buf = fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    def write_epoch(self, data: bytes) -> bool:
        """Write a whole epoch, or nothing if the port has no room for it."""
        if self.queued() + len(data) > PORT_BUFFER_BYTES:
            return False
        try:
            n = os.write(self.master, data)
        except BlockingIOError:
            return False
        # A short write lost the tail (a truncated sentence on the line, as an
        # overrun UART produces); the epoch does not count as delivered.
        return n == len(data)

    def drain_input(self) -> None:
        """Discard what the reader sent to the receiver (configuration commands)."""
        while True:
            try:
                if not os.read(self.master, 4096):
                    return
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EIO):
                    return
                raise

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def make_link(link: Path, target: str) -> None:
    """Point ``link`` at target atomically; refuse to clobber anything but a symlink."""
    if os.path.lexists(link) and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; not replacing it")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_link(link: Path, target: str) -> None:
    """Remove the link if it is still ours (another simulator may have taken it over)."""
    try:
        if os.readlink(link) == target:
            link.unlink()
    except OSError:
        pass


def oracle_record(fix: SimFix, damaged: frozenset[str]) -> dict[str, Any]:
    """The fix as a reader gets it back from the NMEA text (see ``oracle``)."""
    lat, ns = nmea.lat_field(fix.lat)
    lon, ew = nmea.lon_field(fix.lon)
    _, kmh = nmea.speed_fields(fix.speed_kmh)
    rec: dict[str, Any] = {
        "src": "gps",
        "t": fix.t_ms,
        "lat": round(nmea.parse_coord(lat, ns), 6),
        "lon": round(nmea.parse_coord(lon, ew), 6),
        "spd": round(float(kmh), 1),
    }
    bad = sorted(damaged & {"RMC", "GGA"})
    if bad:
        rec["bad"] = bad
    return rec


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Stop:
    """SIGTERM/SIGINT/SIGHUP set a flag and wake the select() through a pipe."""

    def __init__(self) -> None:
        self.requested = False
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self._old_wakeup = signal.set_wakeup_fd(self.wfd)
        self._old: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def drain(self) -> None:
        try:
            while os.read(self.rfd, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        os.close(self.rfd)
        os.close(self.wfd)


def _wait_until(t_ms: int, port: PtyPort, stop: _Stop) -> bool:
    """Sleep until wall-clock t_ms, meanwhile discarding reader input; False if asked to stop."""
    while not stop.requested:
        remaining = t_ms - _now_ms()
        if remaining <= 0:
            return True
        readable, _, _ = select.select([stop.rfd, port.master], [], [], remaining / 1000.0)
        if stop.rfd in readable:
            stop.drain()
        if port.master in readable:
            port.drain_input()
    return False


def _setup_error(what: str, e: OSError) -> OSError:
    return OSError(e.errno, f"cannot {what}: {e.strerror or e}")


def run_gps(opts: GpsOptions, out: TextIO = sys.stdout) -> GpsStats:
    """Run the emulator until SIGTERM/SIGINT/SIGHUP. Prints the port path first."""
    stats = GpsStats()
    stop = _Stop()
    port = PtyPort()
    oracle: Oracle | None = None
    linked = False
    try:
        if opts.link is not None:
            try:
                make_link(opts.link, port.path)
            except OSError as e:
                raise _setup_error(f"create --link {opts.link}", e) from None
            linked = True
        if opts.oracle is not None:
            try:
                oracle = Oracle(opts.oracle)
            except OSError as e:
                raise _setup_error(f"open --oracle {opts.oracle}", e) from None
        print(port.path, file=out, flush=True)
        log.info(
            "gps on %s%s at %d Hz, seed %d",
            port.path,
            f" ({opts.link})" if opts.link else "",
            opts.hz,
            opts.seed,
        )
        _loop(opts, port, stop, oracle, stats)
        log.info(
            "gps stopped: %d epochs written, %d dropped (nobody reading), %d skipped",
            stats.epochs,
            stats.dropped,
            stats.skipped,
        )
    finally:
        if linked and opts.link is not None:
            remove_link(opts.link, port.path)
        if oracle is not None:
            oracle.close()
        port.close()
        stop.close()
    return stats


def _loop(
    opts: GpsOptions, port: PtyPort, stop: _Stop, oracle: Oracle | None, stats: GpsStats
) -> None:
    route = RouteSim(opts.seed, opts.hz, opts.route_start_ms)
    sky = Sky(opts.seed, systems_for(opts.talker))
    faults = FaultInjector(
        random.Random(f"fleet-sim/faults/{opts.seed}"), opts.bad_checksum_rate, opts.garbage_rate
    )
    last_second = -1
    while True:
        fix = route.step()
        if opts.no_fix:
            fix = dataclasses.replace(fix, fix_type=0, sats=0, hdop=NO_FIX_HDOP)
        if not _wait_until(fix.t_ms, port, stop):
            return
        if _now_ms() - fix.t_ms > MAX_LATENESS_MS:
            stats.skipped += 1
            continue
        second = fix.t_ms // 1000
        lines = nmea.epoch(
            fix, sky.view(fix.t_ms, fix.sats), opts.talker, full=second != last_second
        )
        last_second = second
        damage = faults.apply(lines)
        if not port.write_epoch(damage.data):
            stats.dropped += 1
            continue
        stats.epochs += 1
        if oracle is not None and fix.fix_type:
            oracle.write([oracle_record(fix, damage.damaged)])
