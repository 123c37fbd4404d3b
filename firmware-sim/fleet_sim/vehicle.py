"""The engine behind the simulated ELM327, driven by the same route as the GPS simulator.

Given the GPS simulator's seed, rate and route start (``--route-start``), the
vehicle replays exactly the drive the receiver reports, so the ECU's speed
matches the GPS speed and the two can be checked against each other:

- RPM follows road speed through a six-speed gearbox and the final drive,
  shifting up and down at fixed engine speeds, idling when standing;
- coolant warms from ambient towards the thermostat's 90 degC while the
  engine runs and cools slowly when it is off;
- load, throttle and MAF follow acceleration; fuel drains with distance;
- the ignition goes off when the vehicle parks (standing longer than
  ``PARK_OFF_S``), and on again when it drives off; it can also be forced
  off/on from outside (SIGUSR1 on ``fleet-sim elm327``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleet_sim.route import RouteSim

GEARS = (3.8, 2.2, 1.45, 1.1, 0.9, 0.75)
FINAL_DRIVE = 3.7
WHEEL_RADIUS_M = 0.31
IDLE_RPM = 780.0
UPSHIFT_RPM = 2_400.0
DOWNSHIFT_RPM = 1_250.0
THERMOSTAT_C = 90.0
WARM_TAU_S = 300.0  # coolant warm-up time constant while running
COOL_TAU_S = 3_600.0  # and the cool-down with the engine off
PARK_OFF_S = 120.0  # standing this long: the driver switched the engine off
FUEL_L_PER_KM = 0.08
TANK_L = 60.0
RUNNING_V = 14.1
RESTING_V = 12.5


def rpm_for(speed_kmh: float, gear: int) -> float:
    wheel_rps = speed_kmh / 3.6 / (2 * math.pi * WHEEL_RADIUS_M)
    return wheel_rps * 60.0 * GEARS[gear] * FINAL_DRIVE


def gear_for(speed_kmh: float, gear: int) -> int:
    """Shift one gear at a time, as a driver does, with hysteresis."""
    if speed_kmh < 1.0:
        return 0
    while gear < len(GEARS) - 1 and rpm_for(speed_kmh, gear) > UPSHIFT_RPM:
        gear += 1
    while gear > 0 and rpm_for(speed_kmh, gear) < DOWNSHIFT_RPM:
        gear -= 1
    return gear


@dataclass
class EngineState:
    ignition: bool = True
    speed_kmh: float = 0.0
    rpm: float = IDLE_RPM
    gear: int = 0
    coolant_c: float = 15.0
    load_pct: float = 20.0
    throttle_pct: float = 12.0
    maf_gs: float = 3.0
    fuel_pct: float = 72.0
    intake_c: float = 18.0
    run_time_s: float = 0.0
    module_v: float = RUNNING_V
    dist_since_clear_km: float = 1_234.0
    odometer_km: float = 48_210.3


class Vehicle:
    """Steps a RouteSim alongside the wall clock and derives the engine from it."""

    def __init__(
        self, seed: int, hz: float, start_ms: int | None = None, ambient_c: float = 15.0
    ) -> None:
        self.route = RouteSim(seed, hz, start_ms)
        self.ambient_c = ambient_c
        self.state = EngineState(coolant_c=ambient_c, intake_c=ambient_c + 3.0)
        self.forced_off = False
        self._standing_s = 0.0
        self._prev_speed = 0.0

    def advance_to(self, now_ms: int) -> EngineState:
        """Run the route up to now (the simulator calls this before each answer)."""
        while self.route.next_t_ms <= now_ms:
            before = self.route.next_t_ms
            fix = self.route.step()
            dt = max(0.0, (self.route.next_t_ms - before) / 1000.0)
            self._update(fix.speed_kmh, dt)
        return self.state

    def _update(self, speed_kmh: float, dt: float) -> None:
        s = self.state
        self._standing_s = self._standing_s + dt if speed_kmh < 0.5 else 0.0
        s.ignition = not self.forced_off and self._standing_s < PARK_OFF_S
        accel = (speed_kmh - self._prev_speed) / 3.6 / dt if dt > 0 else 0.0
        self._prev_speed = speed_kmh
        s.odometer_km += speed_kmh * dt / 3600.0
        s.dist_since_clear_km += speed_kmh * dt / 3600.0
        s.fuel_pct = max(3.0, s.fuel_pct - speed_kmh * dt / 3600.0 * FUEL_L_PER_KM / TANK_L * 100)
        if not s.ignition:
            s.speed_kmh = s.rpm = s.load_pct = s.throttle_pct = s.maf_gs = 0.0
            s.run_time_s = 0.0
            s.module_v = RESTING_V
            s.coolant_c += (self.ambient_c - s.coolant_c) * (1 - math.exp(-dt / COOL_TAU_S))
            return
        s.speed_kmh = speed_kmh
        s.gear = gear_for(speed_kmh, s.gear)
        s.rpm = max(IDLE_RPM, rpm_for(speed_kmh, s.gear)) if speed_kmh >= 1.0 else IDLE_RPM
        pull = max(0.0, accel) / 3.0  # 0..~1 under hard acceleration
        cruise = speed_kmh / 200.0  # rolling and air resistance
        s.load_pct = min(100.0, 18.0 + 60.0 * pull + 40.0 * cruise)
        s.throttle_pct = min(100.0, 11.0 + 70.0 * pull + 30.0 * cruise)
        s.maf_gs = s.rpm / 1000.0 * (1.5 + s.load_pct / 12.0)
        s.run_time_s += dt
        s.module_v = RUNNING_V
        s.coolant_c += (THERMOSTAT_C - s.coolant_c) * (1 - math.exp(-dt / WARM_TAU_S))
        s.intake_c = self.ambient_c + 3.0 + 10.0 * (s.coolant_c - self.ambient_c) / 75.0


# -- OBD encodings of the state (inverse of the agent's decoders) -------------


def _u8(v: float) -> bytes:
    return bytes([max(0, min(255, round(v)))])


def _u16(v: float) -> bytes:
    return max(0, min(65535, round(v))).to_bytes(2, "big")


def pid_bytes(pid: int, s: EngineState, ambient_c: float) -> bytes | None:
    """Data bytes of one mode 01 PID for this state; None if the vehicle does not support it."""
    pct = 255.0 / 100.0
    table: dict[int, bytes] = {
        0x01: b"\x00\x07\xe5\x00",  # monitor status: no MIL, tests complete
        0x03: b"\x02\x00",  # fuel system closed loop
        0x04: _u8(s.load_pct * pct),
        0x05: _u8(s.coolant_c + 40),
        0x0B: _u8(30 + s.load_pct * 0.7),  # MAP, kPa
        0x0C: _u16(s.rpm * 4),
        0x0D: _u8(s.speed_kmh),
        0x0F: _u8(s.intake_c + 40),
        0x10: _u16(s.maf_gs * 100),
        0x11: _u8(s.throttle_pct * pct),
        0x1C: b"\x06",  # EOBD
        0x1F: _u16(s.run_time_s),
        0x21: _u16(0),  # distance with MIL on
        0x2F: _u8(s.fuel_pct * pct),
        0x31: _u16(s.dist_since_clear_km),
        0x33: _u8(101),  # barometric pressure, kPa
        0x42: _u16(s.module_v * 1000),
        0x46: _u8(ambient_c + 40),
        0x5C: _u8(s.coolant_c - 5 + 40),  # oil temperature
        0xA6: round(s.odometer_km * 10).to_bytes(4, "big"),
    }
    return table.get(pid)


SUPPORTED: frozenset[int] = frozenset(
    {0x01, 0x03, 0x04, 0x05, 0x0B, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x1C, 0x1F, 0x21, 0x2F}
    | {0x31, 0x33, 0x42, 0x46, 0x5C, 0xA6}
)


def support_bitmap(base: int, supported: frozenset[int] = SUPPORTED) -> bytes | None:
    """Answer to PID ``base`` (00, 20, ...): which of the next 32 exist, and whether more do."""
    if base and not any(p > base for p in supported):
        return None
    bits = 0
    for i in range(32):
        pid = base + i + 1
        if pid in supported or (i == 31 and any(p > pid for p in supported)):
            bits |= 1 << (31 - i)
    return bits.to_bytes(4, "big")
