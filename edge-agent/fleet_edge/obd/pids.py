"""The OBD-II PIDs the agent knows, as data: one row per PID, one decoder per formula.

Each row says how many data bytes the ECU returns and which formula turns
them into a value in the wire contract's units (see fleet_wire.models.Engine).
Adding a PID is adding a row; nothing else changes. Formulas are SAE J1979's,
named after the letters it uses for the data bytes (A, B, C, D).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Decoder = Callable[[bytes], float]


def _a(scale: float = 1.0, offset: float = 0.0) -> Decoder:
    """One byte: A * scale + offset."""
    return lambda d: d[0] * scale + offset


def _ab(scale: float = 1.0, offset: float = 0.0) -> Decoder:
    """Two bytes, big-endian: (256A + B) * scale + offset."""
    return lambda d: (d[0] * 256 + d[1]) * scale + offset


def _abcd(scale: float = 1.0) -> Decoder:
    """Four bytes, big-endian: (A<<24 | B<<16 | C<<8 | D) * scale."""
    return lambda d: int.from_bytes(d[:4], "big") * scale


PERCENT = 100.0 / 255.0


@dataclass(frozen=True, slots=True)
class Pid:
    pid: int  # mode 01 PID number
    name: str  # what the config file calls it
    key: str  # fleet_wire Engine field the value goes to
    size: int  # data bytes in the response
    decode: Decoder
    unit: str
    digits: int  # decimals kept (the wire pays for every digit)


# Mode 01, current data. Ordered as a sensible default polling priority.
PIDS: tuple[Pid, ...] = (
    Pid(0x0C, "rpm", "rpm", 2, _ab(0.25), "rpm", 0),
    Pid(0x0D, "speed", "vss", 1, _a(), "km/h", 0),
    Pid(0x05, "coolant_temp", "ect", 1, _a(1, -40), "degC", 0),
    Pid(0x04, "engine_load", "load", 1, _a(PERCENT), "%", 1),
    Pid(0x11, "throttle", "tps", 1, _a(PERCENT), "%", 1),
    Pid(0x2F, "fuel_level", "fuel", 1, _a(PERCENT), "%", 1),
    Pid(0x0F, "intake_temp", "iat", 1, _a(1, -40), "degC", 0),
    Pid(0x10, "maf", "maf", 2, _ab(0.01), "g/s", 2),
    Pid(0x1F, "run_time", "run", 2, _ab(), "s", 0),
    Pid(0x42, "module_voltage", "vbat", 2, _ab(0.001), "V", 2),
    Pid(0x31, "distance_since_clear", "dist_clr", 2, _ab(), "km", 0),
    Pid(0xA6, "odometer", "odo", 4, _abcd(0.1), "km", 1),
)

BY_PID: dict[int, Pid] = {p.pid: p for p in PIDS}
BY_NAME: dict[str, Pid] = {p.name: p for p in PIDS}

# The "PIDs supported [01-20]" family: each answers a 32-bit bitmap of the
# next 32 PIDs, whose last bit says whether the next bitmap PID exists.
SUPPORT_PIDS: tuple[int, ...] = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0)

# Response sizes of every mode 01 PID the driver may meet in a multi-PID
# answer, known or not: without the size of each, one answer with several
# PIDs cannot be cut apart. Sizes from SAE J1979 for the common ones.
_SIZES: dict[int, int] = {p: 4 for p in SUPPORT_PIDS}
_SIZES.update({p.pid: p.size for p in PIDS})
_SIZES.update({0x01: 4, 0x03: 2, 0x06: 1, 0x07: 1, 0x0B: 1, 0x0E: 1, 0x13: 1, 0x1C: 1, 0x21: 2})
_SIZES.update({0x33: 1, 0x46: 1, 0x4D: 2, 0x4E: 2, 0x51: 1, 0x5C: 1, 0x5E: 2})


def response_size(pid: int) -> int | None:
    return _SIZES.get(pid)


def supported_from_bitmap(base: int, bitmap: bytes) -> set[int]:
    """PIDs base+1..base+32 whose bit is set (MSB first)."""
    value = int.from_bytes(bitmap[:4], "big")
    return {base + i + 1 for i in range(32) if value & (1 << (31 - i))}


def decode_value(pid: Pid, data: bytes) -> float | None:
    """The PID's value, or None when the data is too short."""
    if len(data) < pid.size:
        return None
    return round(pid.decode(data), pid.digits)
