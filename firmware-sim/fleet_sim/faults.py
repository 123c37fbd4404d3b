"""Damage a serial NMEA stream the way real hardware does.

A reader in a vehicle meets all of these: bit errors on a long cable (wrong
checksum), receivers and cheap adapters that leave the checksum out, line noise
and USB glitches (garbage and NUL bytes), and receivers that reset or buffers
that overrun mid-sentence (truncated lines). The helpers are pure functions of
their input and an RNG, so a fault run replays with its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fleet_sim.nmea import frame


def bad_checksum(line: str) -> str:
    """The sentence with a checksum that does not match (one bit of the sum flipped)."""
    body, star, cs = line.rpartition("*")
    if not star:
        raise ValueError(f"no checksum in {line!r}")
    return f"{body}*{int(cs, 16) ^ 0x01:02X}"


def no_checksum(line: str) -> str:
    """The sentence without its ``*hh`` (legal NMEA, which a strict reader may refuse)."""
    body, star, _ = line.rpartition("*")
    return body if star else line


def truncated(line: str, rng: random.Random) -> str:
    """A prefix of the sentence that stops before its checksum."""
    end = line.rfind("*")
    return line[: rng.randint(1, max(1, end - 1))]


def garbage(rng: random.Random, size: int | None = None) -> bytes:
    """Random bytes, any value but line feed (so they stay one bad line)."""
    n = size if size is not None else rng.randint(1, 40)
    return bytes(b if b != 0x0A else 0x0B for b in rng.randbytes(n))


def nul_bytes(rng: random.Random, size: int | None = None) -> bytes:
    """A run of NULs, as a USB serial adapter produces when it re-enumerates."""
    return b"\x00" * (size if size is not None else rng.randint(1, 16))


def with_nuls(line: str, rng: random.Random) -> bytes:
    """The sentence with NUL bytes inserted somewhere inside it."""
    raw = line.encode("ascii")
    at = rng.randint(1, len(raw) - 1)
    return raw[:at] + nul_bytes(rng) + raw[at:]


@dataclass
class Damage:
    """One epoch's bytes after fault injection, and which real sentences were hurt."""

    data: bytes
    damaged: frozenset[str]  # sentence kinds ("RMC", "GGA"...) whose only copy is unusable


class FaultInjector:
    """Applies faults to an epoch at the given rates (0 disables a fault).

    ``bad_checksum_rate``: chance per sentence that its checksum is wrong.
    ``garbage_rate``: chance per sentence that junk is injected before it:
    random bytes, NULs, a truncated or checksum-less copy of it. Junk is always
    ended by CR LF so it spoils only its own line; the real sentence follows
    intact, so only checksum faults cost the reader data.
    """

    def __init__(
        self, rng: random.Random, bad_checksum_rate: float = 0.0, garbage_rate: float = 0.0
    ) -> None:
        for name, rate in (
            ("bad_checksum_rate", bad_checksum_rate),
            ("garbage_rate", garbage_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {rate}")
        self._rng = rng
        self.bad_checksum_rate = bad_checksum_rate
        self.garbage_rate = garbage_rate

    @property
    def active(self) -> bool:
        return self.bad_checksum_rate > 0 or self.garbage_rate > 0

    def apply(self, lines: list[str]) -> Damage:
        if not self.active:
            return Damage(frame(lines), frozenset())
        rng = self._rng
        out: list[bytes] = []
        damaged: set[str] = set()
        for line in lines:
            if self.garbage_rate and rng.random() < self.garbage_rate:
                out.append(self._junk(line) + b"\r\n")
            if self.bad_checksum_rate and rng.random() < self.bad_checksum_rate:
                line = bad_checksum(line)
                damaged.add(line[3:6])
            out.append(line.encode("ascii") + b"\r\n")
        return Damage(b"".join(out), frozenset(damaged))

    def _junk(self, line: str) -> bytes:
        kind = self._rng.randrange(5)
        if kind == 0:
            return garbage(self._rng)
        if kind == 1:
            return nul_bytes(self._rng)
        if kind == 2:
            return truncated(line, self._rng).encode("ascii")
        if kind == 3:
            return no_checksum(line).encode("ascii")
        return with_nuls(line, self._rng)
