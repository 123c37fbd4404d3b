"""NMEA builders against pynmea2, the parser the edge agent uses."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

import pynmea2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_sim import faults, nmea
from fleet_sim.route import NO_FIX_HDOP, SimFix
from fleet_sim.sky import Sky, systems_for

T_MS = 1_732_177_245_370  # 2024-11-21 08:20:45.37 UTC

FIX = SimFix(
    t_ms=T_MS,
    lat=52.5200123,
    lon=13.4049876,
    speed_kmh=47.3,
    heading_deg=271.456,
    alt_m=34.27,
    hdop=0.93,
    sats=9,
    fix_type=3,
)
NO_FIX = dataclasses.replace(FIX, fix_type=0, sats=0, hdop=NO_FIX_HDOP)


def parse(line: str) -> pynmea2.NMEASentence:
    return pynmea2.parse(line, check=True)


def fix_time(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, tz=UTC)


def test_checksum_matches_pynmea2() -> None:
    line = nmea.sentence("GP", "GGA", ["1", "2", ""])
    body, cs = line[1:].split("*")
    assert cs == f"{pynmea2.NMEASentence.checksum(body):02X}"


@pytest.mark.parametrize("talker", ["GP", "GN"])
def test_rmc_round_trip(talker: str) -> None:
    msg = parse(nmea.rmc(FIX, talker))
    assert isinstance(msg, pynmea2.RMC)
    assert msg.talker == talker
    assert msg.status == "A"
    assert msg.mode_indicator == "A"
    assert msg.datetime == fix_time(T_MS)
    assert msg.latitude == pytest.approx(FIX.lat, abs=1e-6)
    assert msg.longitude == pytest.approx(FIX.lon, abs=1e-6)
    assert msg.spd_over_grnd * 1.852 == pytest.approx(FIX.speed_kmh, abs=0.01)
    assert msg.true_course == pytest.approx(271.46)


def test_gga_round_trip() -> None:
    msg = parse(nmea.gga(FIX))
    assert isinstance(msg, pynmea2.GGA)
    assert msg.timestamp == fix_time(T_MS).timetz()
    assert msg.gps_qual == 1
    assert int(msg.num_sats) == 9
    assert float(msg.horizontal_dil) == pytest.approx(0.93)
    assert msg.altitude == pytest.approx(34.3)
    assert msg.altitude_units == "M"
    assert msg.latitude == pytest.approx(FIX.lat, abs=1e-6)
    assert msg.longitude == pytest.approx(FIX.lon, abs=1e-6)


def test_vtg_round_trip() -> None:
    msg = parse(nmea.vtg(FIX))
    assert isinstance(msg, pynmea2.VTG)
    assert msg.true_track == pytest.approx(271.46)
    assert msg.spd_over_grnd_kmph == pytest.approx(47.3)
    assert float(msg.spd_over_grnd_kts) == pytest.approx(47.3 / 1.852, abs=0.001)


def test_zda_round_trip() -> None:
    msg = parse(nmea.zda(T_MS))
    assert isinstance(msg, pynmea2.ZDA)
    assert msg.datetime == fix_time(T_MS)


@pytest.mark.parametrize("talker", ["GP", "GN"])
def test_gsa_and_gsv_describe_one_sky(talker: str) -> None:
    sats = Sky(3, systems_for(talker)).view(T_MS, FIX.sats)
    used = {(s.system, s.prn) for s in sats if s.used}
    assert len(used) == FIX.sats

    gsa_used: set[int] = set()
    for line in nmea.gsa(FIX, sats, talker):
        msg = parse(line)
        assert isinstance(msg, pynmea2.GSA)
        assert msg.mode_fix_type == "3"
        assert float(msg.hdop) == pytest.approx(0.93)
        ids = (getattr(msg, f"sv_id{i:02d}") for i in range(1, 13))
        gsa_used |= {int(i) for i in ids if i}
    assert gsa_used == {prn for _, prn in used}

    seen: list[tuple[str, int]] = []
    for line in nmea.gsv(sats):
        msg = parse(line)
        assert isinstance(msg, pynmea2.GSV)
        in_system = [s for s in sats if s.system == msg.talker]
        assert int(msg.num_messages) == (len(in_system) + 3) // 4
        assert int(msg.num_sv_in_view) == len(in_system)
        for i in range(1, 5):
            prn = getattr(msg, f"sv_prn_num_{i}", "")
            if prn:
                seen.append((msg.talker, int(prn)))
                assert 0 <= int(getattr(msg, f"elevation_deg_{i}")) <= 90
                assert 0 <= int(getattr(msg, f"azimuth_{i}")) < 360
    assert sorted(seen) == sorted((s.system, s.prn) for s in sats)


def test_no_fix_epoch_is_what_a_receiver_sends() -> None:
    sats = Sky(1).view(T_MS, 0)
    lines = nmea.epoch(NO_FIX, sats)
    msgs = {m.sentence_type: m for m in map(parse, lines)}
    rmc, gga, vtg = msgs["RMC"], msgs["GGA"], msgs["VTG"]
    assert rmc.status == "V"
    assert rmc.lat == rmc.lon == ""
    assert rmc.spd_over_grnd is None
    assert rmc.datestamp == fix_time(T_MS).date()  # the receiver still knows the time
    assert gga.gps_qual == 0
    assert gga.lat == gga.lon == ""
    assert gga.altitude is None
    assert vtg.faa_mode == "N"
    assert vtg.spd_over_grnd_kmph is None
    assert msgs["GSA"].mode_fix_type == "1"
    assert all(not s.used for s in sats)


def test_epoch_order_and_framing() -> None:
    sats = Sky(1).view(T_MS, FIX.sats)
    lines = nmea.epoch(FIX, sats, full=False)
    assert [line[3:6] for line in lines] == ["RMC", "VTG", "GGA", "GSA"]
    full = nmea.epoch(FIX, sats)
    assert {line[3:6] for line in full} == {"RMC", "VTG", "GGA", "GSA", "GSV", "ZDA"}
    data = nmea.frame(full)
    assert data.endswith(b"\r\n")
    assert data.count(b"\r\n") == len(full)
    assert all(len(line) + 2 <= 82 for line in full)  # NMEA's maximum sentence length


@pytest.mark.parametrize(
    ("lat", "lon", "text"),
    [
        (52.52, 13.40, ("5231.20000", "N", "01324.00000", "E")),
        (-33.8688, -151.2093, ("3352.12800", "S", "15112.55800", "W")),
        (0.0, 0.0, ("0000.00000", "N", "00000.00000", "E")),
        # Rounds up to a whole degree: must not print 60 minutes.
        (52.9999999999, 179.9999999999, ("5300.00000", "N", "18000.00000", "E")),
    ],
)
def test_coordinate_fields(lat: float, lon: float, text: tuple[str, str, str, str]) -> None:
    assert (*nmea.lat_field(lat), *nmea.lon_field(lon)) == text


@given(
    lat=st.floats(min_value=-89.99999, max_value=89.99999),
    lon=st.floats(min_value=-179.99999, max_value=179.99999),
)
def test_coordinates_parse_back_within_resolution(lat: float, lon: float) -> None:
    fix = dataclasses.replace(FIX, lat=lat, lon=lon)
    msg = parse(nmea.gga(fix))
    # 1e-5 minute is 1.7e-7 degree; half of it is the worst rounding.
    assert msg.latitude == pytest.approx(lat, abs=1e-7)
    assert msg.longitude == pytest.approx(lon, abs=1e-7)
    lat_text, ns = nmea.lat_field(lat)
    assert nmea.parse_coord(lat_text, ns) == msg.latitude
    assert float(lat_text[2:]) < 60.0


# RMC's two-digit year: pynmea2 (strptime %y) reads 69..99 as 19xx, so stay before 2069.
@given(
    st.integers(min_value=946_684_800_000, max_value=3_124_223_999_990).map(lambda t: t // 10 * 10)
)
def test_time_fields_round_trip(t_ms: int) -> None:
    msg = parse(nmea.rmc(dataclasses.replace(FIX, t_ms=t_ms)))
    assert msg.datetime == fix_time(t_ms)


# -- faults -------------------------------------------------------------------


def test_bad_checksum_is_refused() -> None:
    with pytest.raises(pynmea2.ChecksumError):
        parse(faults.bad_checksum(nmea.rmc(FIX)))


def test_missing_checksum_is_refused_by_a_strict_reader() -> None:
    line = faults.no_checksum(nmea.rmc(FIX))
    assert "*" not in line
    with pytest.raises(pynmea2.ChecksumError):
        parse(line)
    assert pynmea2.parse(line).latitude == pytest.approx(FIX.lat, abs=1e-6)


def test_truncated_line_stops_before_the_checksum() -> None:
    rng = random.Random(1)
    line = nmea.rmc(FIX)
    for _ in range(50):
        cut = faults.truncated(line, rng)
        assert line.startswith(cut)
        assert "*" not in cut
        with pytest.raises(pynmea2.ParseError):
            parse(cut)


def test_garbage_and_nuls_stay_on_their_line() -> None:
    rng = random.Random(2)
    assert b"\n" not in faults.garbage(rng, 5000)
    assert set(faults.nul_bytes(rng)) == {0}
    dirty = faults.with_nuls(nmea.gga(FIX), rng)
    assert b"\x00" in dirty
    assert dirty.replace(b"\x00", b"").decode() == nmea.gga(FIX)


def test_fault_injector_reports_what_it_damaged() -> None:
    sats = Sky(1).view(T_MS, FIX.sats)
    lines = nmea.epoch(FIX, sats)
    inj = faults.FaultInjector(random.Random(5), bad_checksum_rate=0.5, garbage_rate=0.5)
    damaged_seen = 0
    for _ in range(40):
        damage = inj.apply(lines)
        raw_lines = damage.data.split(b"\r\n")
        assert raw_lines[-1] == b""
        bad: set[str] = set()
        for raw in raw_lines[:-1]:
            if b"\x00" in raw or not raw.startswith(b"$") or b"*" not in raw:
                continue  # junk: a strict reader drops it
            text = raw.decode("latin-1")
            try:
                parse(text)
            except pynmea2.ChecksumError:
                bad.add(text[3:6])
        # Junk copies with NULs are skipped above, so every checksum failure
        # left is a real sentence the injector says it damaged.
        assert bad == set(damage.damaged)
        damaged_seen += bool(bad)
        # Every real sentence is still there, damaged or not.
        assert (
            sum(r.startswith(b"$GPRMC") and b"\x00" not in r and b"*" in r for r in raw_lines) >= 1
        )
    assert damaged_seen > 0


def test_no_faults_means_exact_frame() -> None:
    lines = nmea.epoch(FIX, Sky(1).view(T_MS, FIX.sats))
    assert faults.FaultInjector(random.Random(1)).apply(lines).data == nmea.frame(lines)
