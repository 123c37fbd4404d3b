"""One NMEA line -> one typed sentence (RMC, GGA, VTG, GSA, GSV, ZDA), or a counted rejection.

Any talker is accepted (GP, GN, GL, GA, BD, GB...): the sentence type decides.

pynmea2 does the framing and verifies the checksum. Field values are then
read strictly here, because pynmea2 is lenient where a tracker must not be:
an empty latitude becomes 0.0 there, and "nan" parses as a float.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

import pynmea2

# A sentence must end in *HH; pynmea2 alone would accept a missing checksum
# unless asked, and we want the reason counted separately.
_HAS_CHECKSUM = re.compile(rb"\*[0-9A-Fa-f]{2}$")
_PRINTABLE = re.compile(rb"[\x20-\x7e]+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")  # no sign, no exponent, no nan/inf
_SIGNED = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(?:\.(\d*))?")
_DATE = re.compile(r"(\d\d)(\d\d)(\d\d)")
_LAT = re.compile(r"(\d\d)(\d\d(?:\.\d+)?)")
_LON = re.compile(r"(\d\d\d)(\d\d(?:\.\d+)?)")

KNOTS_TO_KMH = 1.852

# Why a line was refused; each is a counter in the agent's health report.
GARBAGE = "garbage"  # no '$' at all
BAD_CHARS = "bad_chars"  # non-printable bytes inside the sentence
NO_CHECKSUM = "no_checksum"
BAD_CHECKSUM = "bad_checksum"
UNSUPPORTED = "unsupported"  # a sentence type pynmea2 does not know
PARSE_ERROR = "parse_error"  # not NMEA framing
BAD_FIELD = "bad_field"  # a field we need is malformed or out of range


@dataclass(frozen=True, slots=True)
class Rmc:
    tod_ms: int | None  # UTC time of day
    day: date | None
    valid: bool  # status A and mode indicator not N
    lat: float | None
    lon: float | None
    speed_kmh: float | None
    course_deg: float | None


@dataclass(frozen=True, slots=True)
class Gga:
    tod_ms: int | None
    quality: int  # 0 = no fix
    lat: float | None
    lon: float | None
    sats: int | None
    hdop: float | None
    alt_m: float | None


@dataclass(frozen=True, slots=True)
class Vtg:
    course_deg: float | None
    speed_kmh: float | None


@dataclass(frozen=True, slots=True)
class Gsa:
    fix_type: Literal[1, 2, 3] | None  # 1 = no fix
    hdop: float | None


@dataclass(frozen=True, slots=True)
class Gsv:
    talker: str  # constellation: GP, GL, GA, BD/GB...
    msg_num: int
    num_messages: int
    in_view: int | None  # satellites of this constellation in view
    snrs: tuple[int, ...]  # signal strengths (dB-Hz) of the tracked ones in this sentence


@dataclass(frozen=True, slots=True)
class Zda:
    tod_ms: int | None
    day: date | None  # with a four-digit year: no century guess


Sentence = Rmc | Gga | Vtg | Gsa | Gsv | Zda


class FieldError(ValueError):
    """A field of an otherwise well-formed sentence is unusable."""


def _raw(msg: pynmea2.NMEASentence, name: str) -> str:
    i = type(msg).name_to_idx[name]
    return msg.data[i].strip() if i < len(msg.data) else ""


def _number(raw: str, lo: float, hi: float, *, signed: bool = False) -> float | None:
    """Optional measurement: empty -> None; out of range -> None (drop the value, keep the fix)."""
    if not raw:
        return None
    if not (_SIGNED if signed else _NUMBER).fullmatch(raw):
        raise FieldError(f"not a number: {raw[:20]!r}")
    v = float(raw)
    return v if lo <= v <= hi else None


def _tod_ms(raw: str) -> int | None:
    if not raw:
        return None
    m = _TIME.fullmatch(raw)
    if not m:
        raise FieldError(f"bad time {raw[:20]!r}")
    h, mi, s = int(m[1]), int(m[2]), int(m[3])
    if h > 23 or mi > 59 or s > 60:  # 60: leap second
        raise FieldError(f"bad time {raw[:20]!r}")
    ms = int((m[4] or "0")[:3].ljust(3, "0"))
    return ((h * 60 + mi) * 60 + s) * 1000 + ms


def _day(raw: str) -> date | None:
    if not raw:
        return None
    m = _DATE.fullmatch(raw)
    if not m:
        raise FieldError(f"bad date {raw[:20]!r}")
    # GNSS receivers are all post-2000; a two-digit year means 20yy.
    return date(2000 + int(m[3]), int(m[2]), int(m[1]))  # ValueError on 31/02


def _coord(raw: str, hemi: str, axis: Literal["lat", "lon"]) -> float | None:
    if not raw and not hemi:
        return None
    m = (_LAT if axis == "lat" else _LON).fullmatch(raw)
    pos, neg, limit = ("N", "S", 90.0) if axis == "lat" else ("E", "W", 180.0)
    if not m or hemi not in (pos, neg):
        raise FieldError(f"bad {axis} {raw[:20]!r} {hemi[:2]!r}")
    minutes = float(m[2])
    value = int(m[1]) + minutes / 60.0
    if minutes >= 60.0 or value > limit:
        raise FieldError(f"{axis} out of range: {raw[:20]!r}")
    return -value if hemi == neg else value


def _int(raw: str, lo: int, hi: int) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or not raw.isascii():
        raise FieldError(f"not an integer: {raw[:20]!r}")
    v = int(raw)
    return v if lo <= v <= hi else None


def _rmc(msg: pynmea2.NMEASentence) -> Rmc:
    knots = _number(_raw(msg, "spd_over_grnd"), 0, 540)  # 540 kn = 1000 km/h
    mode = _raw(msg, "mode_indicator")  # NMEA 2.3+: N = data not valid
    return Rmc(
        tod_ms=_tod_ms(_raw(msg, "timestamp")),
        day=_day(_raw(msg, "datestamp")),
        valid=_raw(msg, "status") == "A" and mode != "N",
        lat=_coord(_raw(msg, "lat"), _raw(msg, "lat_dir"), "lat"),
        lon=_coord(_raw(msg, "lon"), _raw(msg, "lon_dir"), "lon"),
        speed_kmh=None if knots is None else knots * KNOTS_TO_KMH,
        course_deg=_number(_raw(msg, "true_course"), 0, 360),
    )


def _gga(msg: pynmea2.NMEASentence) -> Gga:
    quality = _int(_raw(msg, "gps_qual"), 0, 9)
    units = _raw(msg, "altitude_units")
    alt = _number(_raw(msg, "altitude"), -1000, 20_000, signed=True)
    return Gga(
        tod_ms=_tod_ms(_raw(msg, "timestamp")),
        quality=quality or 0,
        lat=_coord(_raw(msg, "lat"), _raw(msg, "lat_dir"), "lat"),
        lon=_coord(_raw(msg, "lon"), _raw(msg, "lon_dir"), "lon"),
        sats=_int(_raw(msg, "num_sats"), 0, 255),
        hdop=_number(_raw(msg, "horizontal_dil"), 0, 100),
        alt_m=alt if units in ("M", "") else None,
    )


def _vtg(msg: pynmea2.NMEASentence) -> Vtg:
    valid = _raw(msg, "faa_mode") != "N"
    return Vtg(
        course_deg=_number(_raw(msg, "true_track"), 0, 360) if valid else None,
        speed_kmh=_number(_raw(msg, "spd_over_grnd_kmph"), 0, 1000) if valid else None,
    )


def _gsa(msg: pynmea2.NMEASentence) -> Gsa:
    mode = _raw(msg, "mode_fix_type")
    fix_type: Literal[1, 2, 3] | None = (
        1 if mode == "1" else 2 if mode == "2" else 3 if mode == "3" else None
    )
    return Gsa(fix_type=fix_type, hdop=_number(_raw(msg, "hdop"), 0, 100))


def _gsv(msg: pynmea2.NMEASentence) -> Gsv:
    num = _int(_raw(msg, "num_messages"), 1, 99)
    i = _int(_raw(msg, "msg_num"), 1, 99)
    if num is None or i is None or i > num:
        raise FieldError("bad GSV message numbering")
    snrs: list[int] = []
    # Up to four satellites per sentence: prn, elevation, azimuth, SNR.
    for k in range(1, 5):
        name = f"snr_{k}"
        if name in type(msg).name_to_idx:
            snr = _int(_raw(msg, name), 0, 99)
            if snr is not None:
                snrs.append(snr)
    return Gsv(
        talker=str(msg.talker),
        msg_num=i,
        num_messages=num,
        in_view=_int(_raw(msg, "num_sv_in_view"), 0, 255),
        snrs=tuple(snrs),
    )


def _zda(msg: pynmea2.NMEASentence) -> Zda:
    d, m, y = _raw(msg, "day"), _raw(msg, "month"), _raw(msg, "year")
    day: date | None = None
    if d or m or y:
        if not (d.isdigit() and m.isdigit() and y.isdigit() and len(y) == 4 and d.isascii()):
            raise FieldError(f"bad ZDA date {d[:4]!r}/{m[:4]!r}/{y[:6]!r}")
        day = date(int(y), int(m), int(d))  # ValueError on 31/02
    return Zda(tod_ms=_tod_ms(_raw(msg, "timestamp")), day=day)


_EXTRACTORS: dict[str, Callable[[pynmea2.NMEASentence], Sentence]] = {
    "RMC": _rmc,
    "GGA": _gga,
    "VTG": _vtg,
    "GSA": _gsa,
    "GSV": _gsv,
    "ZDA": _zda,
}


class NmeaParser:
    """Validates and types single lines; counts every refusal by reason."""

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self.ignored = 0  # well-formed sentences we have no use for (GLL, TXT...)

    def parse(self, line: bytes) -> Sentence | None:
        # A partial sentence followed by a whole one on the same line (bytes lost
        # at open or after noise): '$' cannot occur inside a sentence, so the
        # last one starts the only sentence that can be complete.
        start = line.rfind(b"$")
        if start < 0:
            if line.strip(b" \x00"):
                self.rejected[GARBAGE] += 1
            return None
        raw = line[start:].rstrip(b" \x00")
        if not _PRINTABLE.fullmatch(raw):
            self.rejected[BAD_CHARS] += 1
            return None
        if not _HAS_CHECKSUM.search(raw):
            self.rejected[NO_CHECKSUM] += 1
            return None
        text = raw.decode("ascii")
        try:
            msg = pynmea2.parse(text, check=True)
        except pynmea2.ChecksumError:
            self.rejected[BAD_CHECKSUM] += 1
            return None
        except pynmea2.SentenceTypeError:
            self.rejected[UNSUPPORTED] += 1
            return None
        except ValueError:  # pynmea2.ParseError and anything else it raises on bad framing
            self.rejected[PARSE_ERROR] += 1
            return None
        extract = _EXTRACTORS.get(getattr(msg, "sentence_type", ""))
        if extract is None or not isinstance(msg, pynmea2.TalkerSentence):
            self.ignored += 1
            return None
        try:
            sentence = extract(msg)
        except ValueError:  # FieldError, or an impossible date
            self.rejected[BAD_FIELD] += 1
            return None
        self.accepted += 1
        return sentence
