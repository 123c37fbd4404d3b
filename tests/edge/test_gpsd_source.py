"""The gpsd source: JSON decoding (never raising), and a real gpsd fed by gpsfake with
a log written by `fleet-sim nmea-log`, including gpsd going away and coming back."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_edge.config import GpsConfig
from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.gps.gpsd_source import GpsdDecoder, GpsdSource
from fleet_sim.route import RouteSim
from tests.edge.waiting import eventually
from tests.harness import Proc, free_port, port_open, tool, wait_until

NOW_ISO = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def line(doc: dict[str, object]) -> bytes:
    return orjson.dumps(doc) + b"\n"


def tpv(**kw: object) -> bytes:
    return line({"class": "TPV", "device": "/dev/pts/1", "time": f"{NOW_ISO}.000Z", **kw})


def test_tpvs_of_one_epoch_are_merged_with_sky() -> None:
    d = GpsdDecoder()
    d.feed(line({"class": "VERSION", "release": "3.22"}))
    d.feed(line({"class": "SKY", "hdop": 0.94, "nSat": 12, "uSat": 10, "satellites": []}))
    assert d.feed(tpv(mode=2, lat=52.1, lon=13.2, speed=10.0, track=90.0)) == []
    assert d.feed(tpv(mode=3, lat=52.1, lon=13.2, altMSL=56.4, speed=10.0, track=90.0)) == []
    (fix,) = d.flush()
    assert isinstance(fix, GpsFix)
    assert (fix.fix_type, fix.alt_m, fix.speed_kmh, fix.hdop, fix.sats) == (3, 56.4, 36.0, 0.94, 10)
    assert d.in_view == 12


def test_no_fix_and_zero_position_are_never_positions() -> None:
    d = GpsdDecoder()
    d.feed(tpv(mode=1))
    (r,) = d.flush()
    assert isinstance(r, NoFix) and r.reason == "gpsd_no_fix"
    d.feed(tpv(mode=3, lat=0.0, lon=0.0))
    (r,) = d.flush()
    assert isinstance(r, NoFix) and r.reason == "zero_position"


def test_bad_lines_are_counted_by_reason() -> None:
    d = GpsdDecoder()
    d.feed(b"{not json\n[1,2]\n")
    d.feed(line({"class": "TPV", "mode": "3"}))
    d.feed(line({"class": "ERROR", "message": "unrecognized request"}))
    d.feed(b"x" * 70_000 + b"\n")
    assert d.rejected == {"bad_json": 2, "bad_field": 1, "gpsd_error": 1, "too_long": 1}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
tpv_like = st.fixed_dictionaries(
    {"class": st.sampled_from(["TPV", "SKY", "ERROR", "X"])},
    optional={
        k: json_values | st.floats(-200, 200)
        for k in ("mode", "lat", "lon", "time", "speed", "track", "alt", "hdop", "satellites")
    },
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), tpv_like.map(line)), max_size=20))
def test_no_exception_escapes_gpsd_decoding(chunks: list[bytes]) -> None:
    d = GpsdDecoder()
    out: list[GpsReading] = []
    for c in chunks:
        out += d.feed(c)
    out += d.flush()
    for r in out:
        if isinstance(r, GpsFix):
            assert -90 <= r.lat <= 90 and -180 <= r.lon <= 180
            assert (r.lat, r.lon) != (0.0, 0.0)


def _gpsfake(log: Path, port: int, logfile: Path) -> Proc:
    # -1: play the log once; -c: seconds between sentences (about 1 epoch/s);
    # -q quiet. gpsfake runs its own gpsd on this port; the system gpsd is untouched.
    p = Proc(["gpsfake", "-1", "-q", "-c", "0.08", "-P", str(port), str(log)], logfile).start()
    wait_until(lambda: port_open(port) or not p.alive(), 20, "gpsfake's gpsd")
    assert p.alive(), p.log()
    return p


async def test_gpsd_fed_by_gpsfake_with_a_fleet_sim_log(tmp_path: Path) -> None:
    start_ms = (time.time_ns() // 1_000_000 // 1000) * 1000
    log = tmp_path / "drive.nmea"
    await asyncio.to_thread(
        subprocess.run,
        [tool("fleet-sim"), "nmea-log", "--out", str(log), "--seconds", "40",
         "--route-start", str(start_ms), "--seed", "3"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    truth = {}
    route = RouteSim(3, 1, start_ms)
    for _ in range(40):
        f = route.step()
        truth[f.t_ms] = f
    port = free_port()
    q: asyncio.Queue[GpsReading] = asyncio.Queue(1000)
    src = GpsdSource(
        GpsConfig(source="gpsd", gpsd_port=port, reopen_max_s=0.5, silence_timeout_s=5.0), q
    )
    fixes: list[GpsFix] = []

    def got(n: int) -> bool:
        while not q.empty():
            r = q.get_nowait()
            if isinstance(r, GpsFix):
                fixes.append(r)
        return len(fixes) >= n

    fake = _gpsfake(log, port, tmp_path / "gpsfake1.log")
    task = asyncio.create_task(src.run())
    try:
        await eventually(lambda: got(5), 60, "fixes through gpsd")
        for f in fixes:
            sim = truth[f.t]
            assert abs(f.lat - sim.lat) < 1e-5 and abs(f.lon - sim.lon) < 1e-5
            assert f.speed_kmh is not None and abs(f.speed_kmh - sim.speed_kmh) < 0.2
        assert any(f.fix_type == 3 and f.sats and f.hdop for f in fixes)
        # gpsd restarts (here: a new gpsfake on the same port): reconnect, fixes resume.
        fake.stop()
        await eventually(lambda: src.stats.lost >= 1, 30, "gpsd gone")
        n = len(fixes)
        fake = _gpsfake(log, port, tmp_path / "gpsfake2.log")
        await eventually(lambda: src.stats.restored >= 1, 30, "gpsd back")
        await eventually(lambda: got(n + 3), 60, "fixes after the restart")
        h = src.health()
        assert h["source"] == "gpsd" and h["rejected"] == {} and h["in_view"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fake.stop()
