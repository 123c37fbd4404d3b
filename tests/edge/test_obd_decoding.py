"""OBD-II decoding: the PID table, ELM327 answer parsing, DTCs, VIN; never raising on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_edge.obd.pids import BY_NAME, PIDS, decode_value, supported_from_bitmap
from fleet_edge.obd.response import (
    clean_lines,
    dtc_code,
    parse_answer,
    parse_dtcs,
    parse_vin,
    parse_voltage,
    split_mode01,
)
from fleet_sim.elm327 import Elm327Emulator, dtc_bytes
from fleet_sim.vehicle import EngineState, pid_bytes


@pytest.mark.parametrize(
    ("name", "data", "value"),
    [
        ("rpm", b"\x1a\xf8", 1726.0),
        ("speed", b"\x32", 50.0),
        ("coolant_temp", b"\x7b", 83.0),
        ("coolant_temp", b"\x00", -40.0),
        ("engine_load", b"\xff", 100.0),
        ("throttle", b"\x80", 50.2),
        ("fuel_level", b"\x40", 25.1),
        ("intake_temp", b"\x41", 25.0),
        ("maf", b"\x01\x2c", 3.0),
        ("run_time", b"\x0e\x10", 3600.0),
        ("module_voltage", b"\x37\x14", 14.1),
        ("distance_since_clear", b"\x04\xd2", 1234.0),
        ("odometer", b"\x00\x07\x5b\xcd", 48225.3),
    ],
)
def test_pid_table_decodes_j1979_formulas(name: str, data: bytes, value: float) -> None:
    assert decode_value(BY_NAME[name], data) == value


def test_short_data_is_no_value() -> None:
    assert decode_value(BY_NAME["rpm"], b"\x1a") is None


def test_supported_bitmap() -> None:
    # 0100 -> BE 1F A8 13: the example from SAE J1979 / Wikipedia's OBD-II PIDs page.
    got = supported_from_bitmap(0x00, bytes.fromhex("BE1FA813"))
    assert got == {0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11,
                   0x13, 0x15, 0x1C, 0x1F, 0x20}  # fmt: skip


def test_echo_searching_spaces_and_prompt_are_stripped() -> None:
    text = "010C\r\nSEARCHING...\r\n41 0C 1A F8\r\n\r\n"
    assert clean_lines(text, "010C") == ["41 0C 1A F8"]
    ans = parse_answer(text, "010C")
    assert ans.error is None and ans.frames == (bytes.fromhex("410C1AF8"),)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NO DATA\r", "no_data"),
        ("SEARCHING...\rUNABLE TO CONNECT\r", "unable_to_connect"),
        ("BUS INIT: ...ERROR\r", "bus_init_error"),
        ("CAN ERROR\r", "can_error"),
        ("STOPPED\r", "stopped"),
        ("?\r", "unknown_command"),
        ("0100\r", "empty"),  # only the echo
        ("41 0C 1A F\r", "not_hex"),
        ("00A\r0: 41 0C\r5: 00\r", "bad_frame"),
    ],
)
def test_adapter_conditions_have_reasons(text: str, reason: str) -> None:
    assert parse_answer(text, "0100").error == reason


def test_iso_tp_multi_frame_and_multi_pid_split() -> None:
    text = "008\r0:410C1AF80D32\r1:057B0000000000\r"
    ans = parse_answer(text, "010C0D05")
    assert ans.frames == (bytes.fromhex("410C1AF80D32057B"),)
    assert split_mode01(ans.frames[0], [0x0C, 0x0D, 0x05]) == {
        0x0C: b"\x1a\xf8",
        0x0D: b"\x32",
        0x05: b"\x7b",
    }
    # PIDs we did not ask for, or a frame cut short, stop the split there.
    assert split_mode01(bytes.fromhex("410C1AF80D"), [0x0C, 0x0D]) == {0x0C: b"\x1a\xf8"}
    assert split_mode01(bytes.fromhex("410C1AF8"), [0x0D]) == {}


def test_dtcs_can_and_legacy_formats() -> None:
    assert dtc_code(0x01, 0x33) == "P0133"
    assert dtc_code(0x43, 0x00) == "C0300"
    assert dtc_code(0x91, 0x23) == "B1123"
    assert dtc_code(0xC1, 0x00) == "U0100"
    can = (bytes.fromhex("4302013343 00".replace(" ", "")),)
    assert parse_dtcs(can, 3, can=True) == ["C0300", "P0133"]
    legacy = (bytes.fromhex("43013301340000"),)  # three slots, 0000 = none
    assert parse_dtcs(legacy, 3, can=False) == ["P0133", "P0134"]
    assert parse_dtcs((bytes.fromhex("4300"),), 3, can=True) == []
    assert parse_dtcs((b"\x41\x00",), 3, can=True) is None
    for code in ("P0133", "C0300", "B1123", "U0100", "P3FFF"):
        b = dtc_bytes(code)
        assert dtc_code(b[0], b[1]) == code


def test_vin_can_and_legacy() -> None:
    vin = "1D4GP00R55B123456"
    can = (b"\x49\x02\x01" + vin.encode(),)
    assert parse_vin(can) == vin
    legacy = [b"\x49\x02\x01\x00\x00\x00" + vin[:1].encode()]
    legacy += [b"\x49\x02" + bytes([i + 2]) + vin[1 + 4 * i : 5 + 4 * i].encode() for i in range(4)]
    assert parse_vin(tuple(legacy)) == vin
    assert parse_vin((b"\x49\x02\x01" + b"SHORT",)) is None
    assert parse_vin((b"\x49\x02\x01" + b"1D4GP00R55B12345O",)) is None  # O is not a VIN letter


def test_voltage() -> None:
    assert parse_voltage("ATRV\r12.6V\r\r") == 12.6
    assert parse_voltage("?\r") is None


def test_emulator_answers_parse_back_to_the_state() -> None:
    """The simulator's encoder and the agent's decoders agree on every PID in the table."""
    state = EngineState(rpm=2150.0, speed_kmh=63.0, coolant_c=88.0, module_v=14.1)
    emu = Elm327Emulator()
    for cmd in ("ATE0", "ATS0", "ATL0"):
        emu.handle(cmd, state)
    for pid in PIDS:
        raw = pid_bytes(pid.pid, state, 15.0)
        assert raw is not None, pid.name
        text = emu.handle(f"01{pid.pid:02X}", state)
        ans = parse_answer(text.rstrip(">"), f"01{pid.pid:02X}")
        assert ans.error is None
        data = split_mode01(ans.frames[0], [pid.pid])[pid.pid]
        assert data == raw
    assert decode_value(BY_NAME["rpm"], pid_bytes(0x0C, state, 15.0) or b"") == 2150.0


ascii_junk = st.text(
    alphabet=st.sampled_from(list("0123456789ABCDEF :\r\n>?.SEARCHINGNODATSPEUBLRV\x00")),
    max_size=300,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=400).map(lambda b: b.decode("latin-1")), ascii_junk))
def test_no_exception_escapes_answer_decoding(text: str) -> None:
    ans = parse_answer(text, "010C0D")
    for frame in ans.frames:
        for pid, raw in split_mode01(frame, [0x0C, 0x0D, 0x05]).items():
            decode_value(next(p for p in PIDS if p.pid == pid), raw)
    parse_dtcs(ans.frames, 3, can=True)
    parse_dtcs(ans.frames, 7, can=False)
    parse_vin(ans.frames)
    parse_voltage(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), max_size=6))
def test_no_exception_escapes_frame_decoding(frames: list[bytes]) -> None:
    t = tuple(frames)
    parse_dtcs(t, 3, can=True)
    parse_dtcs(t, 3, can=False)
    parse_vin(t)
    for f in frames:
        split_mode01(f, list(range(256)))
