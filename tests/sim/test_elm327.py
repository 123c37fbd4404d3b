"""The simulated ELM327 and the vehicle behind it: AT commands, quirks, engine physics."""

from __future__ import annotations

from fleet_sim.elm327 import Elm327Emulator
from fleet_sim.route import RouteSim
from fleet_sim.vehicle import (
    IDLE_RPM,
    PARK_OFF_S,
    THERMOSTAT_C,
    EngineState,
    Vehicle,
    gear_for,
    rpm_for,
    support_bitmap,
)

T0 = 1_795_000_000_000


def quiet(emu: Elm327Emulator, state: EngineState) -> None:
    for cmd in ("ATZ", "ATE0", "ATL0", "ATS0", "ATH0", "ATSP0"):
        emu.handle(cmd, state)


def test_init_and_settings() -> None:
    emu, s = Elm327Emulator(), EngineState()
    assert emu.handle("ATZ", s) == "ATZ\r\n\r\nELM327 v1.4b\r\n\r\n>"  # echo on after reset
    assert emu.handle("ATE0", s) == "ATE0\r\nOK\r\n\r\n>"  # echoed before it takes effect
    assert emu.handle("ATL0", s) == "OK\r\r>"
    assert emu.handle("ATXYZ", s) == "?\r\r>"
    assert emu.handle("ATDPN", s) == "0\r\r>"
    emu.handle("ATS0", s)
    assert emu.handle("0100", s).startswith("SEARCHING...\r4100")
    assert emu.handle("0100", s).startswith("4100")  # found once, no more searching
    assert emu.handle("ATDPN", s) == "A6\r\r>"


def test_ignition_off_means_unable_to_connect_then_no_data() -> None:
    emu, s = Elm327Emulator(), EngineState(ignition=False)
    quiet(emu, s)
    assert emu.handle("010C", s) == "SEARCHING...\rUNABLE TO CONNECT\r\r>"
    s.ignition = True
    assert emu.handle("010C", s).startswith("SEARCHING...\r410C")
    s.ignition = False
    assert emu.handle("010C", s) == "NO DATA\r\r>"
    assert emu.handle("ATRV", s).endswith("V\r\r>")  # the adapter itself still answers


def test_multi_pid_multi_frame_dtc_and_vin() -> None:
    emu = Elm327Emulator(stored=["P0133", "U0100", "C0300"], pending=["P0420"])
    s = EngineState()
    quiet(emu, s)
    lines = emu.handle("010C0D05", s).split("\r")
    lines = [ln for ln in lines if ln and ln not in (">", "SEARCHING...")]
    assert lines[0] == "008" and lines[1].startswith("0:410C") and lines[2].startswith("1:")
    assert emu.handle("03", s) == "008\r0:43030133C100\r1:43000000000000\r\r>"
    assert emu.handle("07", s) == "47010420\r\r>"
    vin = emu.handle("0902", s)
    assert vin.startswith("014\r0:490201")
    assert emu.handle("0199", s) == "NO DATA\r\r>"  # unsupported PID


def test_quirky_clone() -> None:
    emu, s = Elm327Emulator(clone=True), EngineState()
    assert "v2.1" in emu.handle("ATZ", s)
    emu.handle("ATE0", s)
    assert emu.handle("ATL0", s).startswith("ATL0\r")  # echo stuck on
    assert "?" in emu.handle("ATAT1", s)
    emu.handle("ATS0", s)
    emu.handle("0100", s)
    reply = emu.handle("010C0D", s)
    assert "410C" in reply and "0D" not in reply.split("410C")[1][:6]  # first PID only


def test_support_bitmaps_chain() -> None:
    first = support_bitmap(0x00)
    assert first is not None and first[3] & 1  # 0x20 listed: more bitmaps follow
    assert support_bitmap(0xC0) is None


def test_rpm_follows_gears() -> None:
    assert rpm_for(50.0, 2) > rpm_for(50.0, 3)
    g = 0
    for v in range(1, 130):
        g2 = gear_for(float(v), g)
        assert g2 >= g  # accelerating: only up-shifts
        g = g2
        if v > 10:
            assert 1000 < rpm_for(float(v), g) < 3200
    assert g == 5


def test_vehicle_speed_is_the_gps_route_speed_and_engine_warms_up() -> None:
    veh = Vehicle(seed=7, hz=1, start_ms=T0)
    route = RouteSim(7, 1, T0)
    coolant = []
    for k in range(1, 900):
        fix = route.step()
        st = veh.advance_to(T0 + k * 1000 - 1)
        if st.ignition:
            assert abs(st.speed_kmh - fix.speed_kmh) < 1e-6
            assert st.rpm >= IDLE_RPM - 1
            coolant.append(st.coolant_c)
    assert coolant[0] < 30 and coolant[-1] > 75 and max(coolant) <= THERMOSTAT_C
    assert coolant == sorted(coolant)


def test_parking_switches_the_ignition_off() -> None:
    veh = Vehicle(seed=1, hz=1, start_ms=T0)
    # Force a long stop by stepping the state machine directly.
    for _ in range(int(PARK_OFF_S) + 5):
        veh._update(0.0, 1.0)
    assert not veh.state.ignition and veh.state.rpm == 0
    veh._update(20.0, 1.0)
    assert veh.state.ignition and veh.state.rpm > 0
    veh.forced_off = True
    veh._update(20.0, 1.0)
    assert not veh.state.ignition
