"""The serial NMEA source on real pseudo-terminals: reading, unplug, re-plug, no fd leaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from fleet_edge.config import GpsConfig
from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.gps.serial_source import GpsSerialSource
from tests.edge.nmea import epoch, now_utc, rmc, sentence
from tests.edge.pty_gps import PtyGps, open_fd_count
from tests.edge.waiting import eventually


class Running:
    def __init__(self, source: GpsSerialSource, queue: asyncio.Queue[GpsReading]) -> None:
        self.source = source
        self.queue = queue
        self.readings: list[GpsReading] = []

    def drain(self) -> list[GpsReading]:
        while not self.queue.empty():
            self.readings.append(self.queue.get_nowait())
        return self.readings

    def fixes(self) -> list[GpsFix]:
        return [r for r in self.drain() if isinstance(r, GpsFix)]


def counter_is(run: Running, name: str, value: int) -> Callable[[], bool]:
    return lambda: bool(getattr(run.source.stats, name) == value)


def fix_count_is(run: Running, n: int) -> Callable[[], bool]:
    return lambda: len(run.fixes()) == n


@pytest.fixture
async def gps_link(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "gps0"


async def start(link: Path, **cfg: float) -> tuple[Running, asyncio.Task[None]]:
    q: asyncio.Queue[GpsReading] = asyncio.Queue(1000)
    src = GpsSerialSource(GpsConfig(port=link, baud=9600, reopen_max_s=0.5, **cfg), q)
    task = asyncio.create_task(src.run())
    return Running(src, q), task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_reads_fixes_and_counts_bad_sentences(gps_link: Path) -> None:
    gps = PtyGps(gps_link)
    run, task = await start(gps_link)
    try:
        await eventually(lambda: run.source.stats.port == "open", 10, "port open")
        t0 = now_utc()
        await gps.write(b"\x00\x00garbage\r\n" + epoch(t0, 48.1, 11.5))
        await gps.write(b"$GPRMC,bad*01\r\n" + b"x" * 500 + b"\r\n")
        await gps.write(epoch(t0 + timedelta(seconds=1), 48.1, 11.6))
        await eventually(lambda: len(run.fixes()) == 2, 10, "two fixes")
        f = run.fixes()[1]
        assert (f.lat, f.lon, f.fix_type) == (48.1, 11.6, 3)
        h = run.source.health()
        assert h["fix"] == "fix" and h["port"] == "open"
        assert h["rejected"] == {"garbage": 1, "bad_checksum": 1, "too_long": 1}
        await gps.write(rmc(t0 + timedelta(seconds=2), 0, 0, valid=False))
        await gps.write(sentence("GNGGA,,,,,,0,00,99.99,,,,,,"))
        await gps.write(rmc(t0 + timedelta(seconds=3), 0, 0, valid=False))
        await eventually(lambda: any(isinstance(r, NoFix) for r in run.drain()), 10, "no fix")
        assert run.source.stats.fix == "no_fix"
    finally:
        await stop(task)
        gps.close()


async def test_unplug_replug_resumes_without_leaking_fds(gps_link: Path) -> None:
    before = open_fd_count()
    gps = PtyGps(gps_link)
    run, task = await start(gps_link)
    t = now_utc()
    try:
        await eventually(lambda: run.source.stats.port == "open", 10, "port open")
        await gps.write(epoch(t, 48.1, 11.5))
        await eventually(lambda: len(run.fixes()) == 1, 10, "first fix")
        baseline = open_fd_count()
        for cycle in range(1, 6):
            gps.unplug()
            await eventually(counter_is(run, "lost", cycle), 10, f"loss {cycle}")
            assert run.source.stats.port == "lost"
            await asyncio.sleep(0.3)  # a few failed reopens while it is gone
            gps.plug()
            await eventually(counter_is(run, "restored", cycle), 10, f"return {cycle}")
            t += timedelta(seconds=1)
            await gps.write(epoch(t, 48.1, 11.5 + cycle * 0.001))
            await eventually(fix_count_is(run, cycle + 1), 10, f"fix after {cycle}")
            # The test's own pty pair is open again too: same count as at baseline.
            assert open_fd_count() == baseline
        assert run.source.health()["lost"] == 5
    finally:
        await stop(task)
        gps.close()
    assert open_fd_count() == before  # the source holds nothing once stopped


async def test_missing_port_at_start_is_waited_for(gps_link: Path) -> None:
    before = open_fd_count()
    run, task = await start(gps_link)
    gps = PtyGps(gps_link, plugged=False)
    try:
        await asyncio.sleep(1.5)
        assert run.source.stats.port == "waiting" and not task.done()
        assert open_fd_count() == before  # failed opens leave nothing behind
        gps.plug()
        await eventually(lambda: run.source.stats.port == "open", 10, "port open")
        await gps.write(epoch(now_utc(), -33.9, 151.2, talker="GP"))
        await eventually(lambda: len(run.fixes()) == 1, 10, "fix")
        assert run.source.stats.restored == 0  # first open is not a "return"
    finally:
        await stop(task)
        gps.close()


async def test_silent_port_is_reopened(gps_link: Path) -> None:
    gps = PtyGps(gps_link)
    run, task = await start(gps_link, silence_timeout_s=1.0)
    try:
        await eventually(lambda: run.source.stats.lost >= 1, 10, "silence detected")
        await eventually(lambda: run.source.stats.restored >= 1, 10, "reopened")
        await gps.write(epoch(now_utc(), 48.1, 11.5))
        await eventually(lambda: len(run.fixes()) == 1, 10, "fix after reopen")
    finally:
        await stop(task)
        gps.close()
