"""NMEA line parsing and epoch assembly: valid input from several talkers, and hostile input."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_edge.gps.decoder import NmeaDecoder
from fleet_edge.gps.epoch import EpochAssembler
from fleet_edge.gps.fix import GpsFix, NoFix
from fleet_edge.gps.nmea_parser import Gga, Gsa, NmeaParser, Rmc, Vtg
from tests.edge.nmea import epoch, gga, gsa, rmc, sentence, vtg

T0 = datetime(2024, 5, 17, 12, 35, 19, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def parse(line: bytes) -> tuple[object, NmeaParser]:
    p = NmeaParser()
    return p.parse(line.rstrip(b"\r\n")), p


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD", "GB"])
def test_rmc_from_any_talker(talker: str) -> None:
    s, p = parse(rmc(T0, 48.1173, -11.516667, knots=22.4, course=84.4, talker=talker))
    assert isinstance(s, Rmc)
    assert s.valid and s.tod_ms == (12 * 3600 + 35 * 60 + 19) * 1000
    assert s.day == T0.date()
    assert s.lat == pytest.approx(48.1173, abs=1e-6)
    assert s.lon == pytest.approx(-11.516667, abs=1e-6)
    assert s.speed_kmh == pytest.approx(22.4 * 1.852, abs=1e-3)
    assert s.course_deg == pytest.approx(84.4)
    assert p.accepted == 1 and not p.rejected


def test_classic_gga_vtg_gsa() -> None:
    s, _ = parse(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47")
    assert s == Gga(
        tod_ms=45_319_000,
        quality=1,
        lat=pytest.approx(48.1173),  # type: ignore[arg-type]
        lon=pytest.approx(11.516667),  # type: ignore[arg-type]
        sats=8,
        hdop=0.9,
        alt_m=545.4,
    )
    v, _ = parse(vtg(54.7, 10.2, talker="GP"))
    assert v == Vtg(course_deg=54.7, speed_kmh=pytest.approx(10.2))  # type: ignore[arg-type]
    a, _ = parse(gsa(2, 1.3, talker="GN"))
    assert a == Gsa(fix_type=2, hdop=1.3)


def test_southern_western_hemisphere() -> None:
    s, _ = parse(rmc(T0, -33.8688, -151.2093))
    assert isinstance(s, Rmc)
    assert s.lat == pytest.approx(-33.8688, abs=1e-6)
    assert s.lon == pytest.approx(-151.2093, abs=1e-6)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", "bad_checksum"),
        (b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "no_checksum"),
        (b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4", "no_checksum"),
        (b"hello world", "garbage"),
        (b"\xff\xfe\x00\x13", "garbage"),
        (b"$GPGGA,1235\x0019,4807.038,N*47", "bad_chars"),
        (b"$GPRMC,\xe9\xe9*00", "bad_chars"),
        (sentence("GPXYZ,1,2,3").rstrip(), "unsupported"),
        (sentence("GP").rstrip(), "parse_error"),
        (sentence("GPRMC,123519,A,zz07.038,N,01131.000,E,,,230394,,").rstrip(), "bad_field"),
        (sentence("GPRMC,253519,A,4807.038,N,01131.000,E,,,230394,,").rstrip(), "bad_field"),
        (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,,,310294,,").rstrip(), "bad_field"),
        (sentence("GPRMC,123519,A,4807.038,X,01131.000,E,,,230394,,").rstrip(), "bad_field"),
        (sentence("GPRMC,123519,A,9907.038,N,01131.000,E,,,230394,,").rstrip(), "bad_field"),
        (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,nan,,230394,,").rstrip(), "bad_field"),
        (sentence("GPGGA,123519,4807.038,N,01131.000,E,x,08,0.9,5.4,M,,,,").rstrip(), "bad_field"),
    ],
)
def test_rejections_are_counted_by_reason(line: bytes, reason: str) -> None:
    s, p = parse(line)
    assert s is None
    assert p.rejected == {reason: 1}


def test_known_but_unused_sentences_are_ignored_not_rejected() -> None:
    # (GSV is used since the satellites-in-view count; GLL carries nothing RMC lacks.)
    s, p = parse(sentence("GPGLL,4916.45,N,12311.12,W,225444,A,A"))
    assert s is None and p.ignored == 1 and not p.rejected


def test_lowercase_checksum_and_junk_before_dollar() -> None:
    line = sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A").rstrip()
    lower = line[:-2] + line[-2:].lower()
    assert isinstance(parse(lower)[0], Vtg)
    # A truncated sentence glued to a whole one (bytes lost at open), and NULs.
    assert isinstance(parse(b"\x00\x00,4807.03" + line + b"\x00")[0], Vtg)


def test_out_of_range_measurements_dropped_but_fix_kept() -> None:
    s, _ = parse(sentence("GNGGA,123519,4807.038,N,01131.000,E,1,08,250.0,99999.0,M,,,,"))
    assert isinstance(s, Gga) and s.hdop is None and s.alt_m is None and s.lat is not None


# --- epoch assembly -------------------------------------------------------------------


def feed(decoder: NmeaDecoder, *chunks: bytes) -> list[GpsFix | NoFix]:
    out: list[GpsFix | NoFix] = []
    for c in chunks:
        out += decoder.feed(c)
    return out


def test_full_epoch_merges_into_one_fix() -> None:
    d = NmeaDecoder()
    out = feed(d, epoch(T0, 48.1173, 11.516667, kmh=50.0, course=270.0))
    assert out == [
        GpsFix(
            t=T0_MS,
            lat=48.1173,
            lon=11.516667,
            speed_kmh=50.0,
            course_deg=270.0,
            alt_m=545.4,
            hdop=0.9,
            sats=9,
            fix_type=None,  # first burst: emitted at RMC+GGA, before its GSA was known
        )
    ]
    # The next burst is known to end with a GSA: it waits for it and carries the 3D flag.
    t1 = T0.replace(second=20)
    burst = epoch(t1, 48.1174, 11.516667, kmh=50.0, course=270.0)
    *head, tail = burst.splitlines(keepends=True)
    assert feed(d, *head) == []
    (fix,) = feed(d, tail)
    assert isinstance(fix, GpsFix) and fix.fix_type == 3 and fix.t == T0_MS + 1000


def test_rmc_gga_only_receiver_emits_without_waiting_for_next_epoch() -> None:
    d = NmeaDecoder()
    out = feed(d, rmc(T0, 1.5, 2.5, talker="GP"), gga(T0, 1.5, 2.5, talker="GP"))
    assert len(out) == 1 and isinstance(out[0], GpsFix)


def test_rmc_only_receiver_emits_when_next_epoch_starts_then_learns() -> None:
    d = NmeaDecoder()
    assert feed(d, rmc(T0, 1.5, 2.5)) == []
    t1 = T0.replace(second=20)
    # Epoch 2 closes epoch 1 (which teaches: bursts are a lone RMC), and is
    # itself complete at once.
    first, second = feed(d, rmc(t1, 1.6, 2.5))
    assert isinstance(first, GpsFix) and first.t == T0_MS and first.alt_m is None
    assert isinstance(second, GpsFix) and second.t == T0_MS + 1000
    (third,) = feed(d, rmc(T0.replace(second=21), 1.7, 2.5))
    assert isinstance(third, GpsFix) and third.t == T0_MS + 2000


def test_mixed_talkers_in_one_epoch() -> None:
    d = NmeaDecoder()
    out = feed(d, rmc(T0, 10.0, 20.0, talker="GN"), gga(T0, 10.0, 20.0, talker="GP"))
    assert len(out) == 1 and isinstance(out[0], GpsFix)


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ([rmc(T0, 0, 0, valid=False), gga(T0, 0, 0, quality=0)], "rmc_void"),
        ([rmc(T0, 48.0, 11.0), gga(T0, 48.0, 11.0, quality=0)], "gga_no_fix"),
        ([rmc(T0, 48.0, 11.0), gsa(1), gga(T0, 48.0, 11.0)], "gsa_no_fix"),
        ([rmc(T0, 0.0, 0.0), gga(T0, 0.0, 0.0)], "zero_position"),
        ([sentence("GPRMC,,V,,,,,,,,,,N")], "no_time"),
    ],
)
def test_no_fix_is_explicit_never_a_position(chunks: list[bytes], reason: str) -> None:
    out = feed(NmeaDecoder(), *chunks)
    assert len(out) == 1
    assert isinstance(out[0], NoFix) and out[0].reason == reason


def test_epoch_without_rmc_is_counted_not_emitted() -> None:
    d = NmeaDecoder()
    feed(d, gga(T0, 48.0, 11.0))
    assert feed(d, rmc(T0.replace(second=20), 48.0, 11.0)) == []
    assert d.epochs_without_rmc == 1


def test_reset_flushes_pending_epoch() -> None:
    a = EpochAssembler()
    p = NmeaParser()
    r = p.parse(rmc(T0, 48.0, 11.0).strip())
    assert r is not None
    assert a.add(r) == []
    (fix,) = a.flush()
    assert isinstance(fix, GpsFix)


# --- line handling ---------------------------------------------------------------------


def test_over_long_lines_dropped_and_counted_then_recovery() -> None:
    d = NmeaDecoder()
    junk = b"A" * 5000
    good = rmc(T0, 1.5, 2.5) + gga(T0, 1.5, 2.5)
    # The junk arrives in pieces with no line end, then the stream recovers.
    out = feed(d, junk[:100], junk[100:], b"\r\n", good)
    assert len(out) == 1
    assert d.rejected["too_long"] == 1


def test_sentence_split_across_reads() -> None:
    d = NmeaDecoder()
    data = epoch(T0, 48.1, 11.5)
    out = feed(d, *[data[i : i + 7] for i in range(0, len(data), 7)])
    assert len(out) == 1 and isinstance(out[0], GpsFix)


def test_bare_cr_and_lf_line_ends() -> None:
    d = NmeaDecoder()
    a, b = rmc(T0, 1.5, 2.5).strip(), gga(T0, 1.5, 2.5).strip()
    assert len(feed(d, a + b"\n" + b + b"\r")) == 1


# --- no input escapes as an exception ----------------------------------------------------

_FIELD = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E).filter(lambda c: c not in "$*,"),
    max_size=12,
)


@st.composite
def checksummed(draw: st.DrawFn) -> bytes:
    """Well-framed sentences with correct checksums and arbitrary field contents."""
    talker = draw(st.sampled_from(["GP", "GN", "BD", "GA", "XX"]))
    kind = draw(st.sampled_from(["RMC", "GGA", "VTG", "GSA", "GSV", "GLL", "ZDA"]))
    fields = draw(st.lists(_FIELD, max_size=20))
    return sentence(f"{talker}{kind}," + ",".join(fields))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), checksummed()), max_size=20))
def test_no_input_bytes_raise(chunks: list[bytes]) -> None:
    d = NmeaDecoder()
    for c in chunks:
        for reading in d.feed(c):
            assert isinstance(reading, GpsFix | NoFix)
            if isinstance(reading, GpsFix):
                assert -90 <= reading.lat <= 90 and -180 <= reading.lon <= 180
                assert (reading.lat, reading.lon) != (0.0, 0.0)
    d.reset()


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=2000),
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=10),
)
def test_valid_stream_survives_interleaved_noise(noise: bytes, cuts: list[int]) -> None:
    d = NmeaDecoder()
    d.feed(noise)
    data = b"\r\n" + epoch(T0, 48.1, 11.5) + epoch(T0.replace(second=20), 48.1, 11.6)
    i = 0
    out = []
    for c in itertools.cycle(cuts):
        out += d.feed(data[i : i + c])
        i += c
        if i >= len(data):
            break
    fixes = [r for r in out if isinstance(r, GpsFix)]
    assert any(f.t == T0_MS + 1000 for f in fixes)


def test_burst_types_are_learned_from_recent_bursts_not_the_last_one() -> None:
    """A receiver that adds VTG/GSA to some bursts only: no burst waits for the next."""
    d = NmeaDecoder()
    times = [T0.replace(second=s) for s in range(20, 30)]
    emitted_within_own_burst = []
    for i, t in enumerate(times):
        extra = [vtg(90.0, 36.0), gsa()] if i % 2 == 0 else []
        out = feed(d, rmc(t, 1.5, 2.5), gga(t, 1.5, 2.5), *extra)
        emitted_within_own_burst.append(
            any(isinstance(o, GpsFix) and o.t == int(t.timestamp() * 1000) for o in out)
        )
    # after a few bursts the common set (RMC, GGA) is known: each burst completes itself
    assert all(emitted_within_own_burst[4:])


def test_quiet_line_flushes_the_pending_burst_once() -> None:
    d = NmeaDecoder()
    assert feed(d, rmc(T0, 1.5, 2.5)) == [] and d.pending  # first burst: waits for GGA
    (fix,) = d.flush_pending()
    assert isinstance(fix, GpsFix) and fix.t == T0_MS and not d.pending
    assert feed(d, gga(T0, 1.5, 2.5)) == []  # a late sentence of the same time: no second fix
    assert d.flush_pending() == []
