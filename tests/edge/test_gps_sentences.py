"""GSV and ZDA, every talker, checksums enforced, and GPS date sanity (week rollover)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_edge.gps.decoder import NmeaDecoder
from fleet_edge.gps.epoch import (
    DATE_BEFORE_BUILD,
    DATE_ROLLOVER,
    GPS_WEEK_ROLLOVER,
    date_problem,
)
from fleet_edge.gps.fix import GpsFix, NoFix
from fleet_edge.gps.nmea_parser import Gsv, NmeaParser, Rmc, Zda
from tests.edge.nmea import epoch, sentence

T0 = datetime(2026, 11, 21, 9, 30, 5, tzinfo=UTC)


def parse(line: bytes) -> tuple[object, NmeaParser]:
    p = NmeaParser()
    return p.parse(line.rstrip(b"\r\n")), p


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD", "GB"])
def test_every_talker_is_accepted(talker: str) -> None:
    s, _ = parse(sentence(f"{talker}RMC,093005.00,A,4807.038,N,01131.000,E,5.0,90.0,211126,,,A"))
    assert isinstance(s, Rmc) and s.valid and s.day == date(2026, 11, 21)
    g, _ = parse(sentence(f"{talker}GSV,2,1,07,01,40,083,46,02,17,308,41,12,07,344,,14,22,228,45"))
    assert isinstance(g, Gsv) and g.talker == talker and g.in_view == 7
    assert g.snrs == (46, 41, 45)  # untracked satellites have no SNR


def test_zda_has_a_four_digit_year() -> None:
    z, _ = parse(sentence("GNZDA,093005.00,21,11,2026,00,00"))
    assert isinstance(z, Zda) and z.day == date(2026, 11, 21) and z.tod_ms == 34_205_000
    _, p = parse(sentence("GNZDA,093005.00,31,02,2026,00,00"))
    assert p.rejected == {"bad_field": 1}
    _, p = parse(sentence("GNZDA,093005.00,21,11,26,00,00"))  # two-digit year: not ZDA
    assert p.rejected == {"bad_field": 1}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$GPGSV,1,1,01,01,40,083,46*00", "bad_checksum"),
        (b"$GPGSV,1,1,01,01,40,083,46", "no_checksum"),
        (b"$GPGSV,2,3,01,01,40,083,46*", "no_checksum"),
    ],
)
def test_checksums_enforced_on_new_sentences(line: bytes, reason: str) -> None:
    s, p = parse(line)
    assert s is None and p.rejected == {reason: 1}


def test_gsv_numbering_checked() -> None:
    _, p = parse(sentence("GPGSV,2,3,08,01,40,083,46"))
    assert p.rejected == {"bad_field": 1}


def test_sats_in_view_summed_over_constellations() -> None:
    d = NmeaDecoder()
    d.feed(epoch(T0, 48.1, 11.5))
    d.feed(sentence("GPGSV,3,1,11,01,40,083,46") + sentence("GLGSV,2,1,06,65,40,083,46"))
    d.feed(sentence("GPGSV,3,2,11,02,40,083,46"))  # not the first of its group: no recount
    assert d.sats_in_view == 17


def test_date_rules() -> None:
    nb, today = date(2024, 1, 1), date(2026, 11, 21)
    assert date_problem(date(2026, 11, 21), nb, today) is None
    assert date_problem(date(2007, 4, 7), nb, today) == DATE_ROLLOVER  # today - 1024 weeks
    assert date_problem(date(1987, 8, 22), nb, today) == DATE_ROLLOVER  # - 2048 weeks
    assert date_problem(date(2023, 6, 1), nb, today) == DATE_BEFORE_BUILD
    # The system clock is not set (a Pi without RTC at boot): no rollover judgement.
    assert date_problem(date(2007, 4, 7), nb, date(1970, 1, 1)) == DATE_BEFORE_BUILD


def test_week_rollover_dates_are_flagged_not_trusted() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    d = NmeaDecoder(not_before=date(2024, 1, 1))
    rolled = now - GPS_WEEK_ROLLOVER  # what a receiver with the rollover bug says
    out = d.feed(epoch(rolled, 48.1, 11.5)) + d.flush_pending()
    assert out and all(isinstance(r, NoFix) and r.reason == DATE_ROLLOVER for r in out)
    assert d.date_flags == {DATE_ROLLOVER: 1}
    out = d.feed(epoch(now + timedelta(seconds=1), 48.1, 11.5)) + d.flush_pending()
    assert any(isinstance(r, GpsFix) for r in out)
    d.feed(epoch(now.replace(year=2023) + timedelta(seconds=2), 48.1, 11.5))
    d.flush_pending()
    assert d.date_flags[DATE_BEFORE_BUILD] == 1


_TALKERS = st.sampled_from(["GP", "GN", "GL", "GA", "BD", "GB"])


@settings(max_examples=300, deadline=None)
@given(_TALKERS, st.lists(st.text(alphabet="0123456789.,-ANSEW", max_size=12), max_size=22))
def test_any_gsv_or_zda_body_is_typed_or_counted(talker: str, fields: list[str]) -> None:
    for kind in ("GSV", "ZDA"):
        s, p = parse(sentence(f"{talker}{kind}," + ",".join(fields)))
        assert (s is not None) != bool(p.rejected) or (s is None and p.ignored)
        # The same sentence with its checksum damaged is never accepted.
        line = sentence(f"{talker}{kind}," + ",".join(fields)).rstrip()
        bad = line[:-2] + f"{int(line[-2:], 16) ^ 0x5A:02X}".encode()
        s2, p2 = parse(bad)
        assert s2 is None and p2.rejected == {"bad_checksum": 1}
