"""Payload models of wire contract v1.

Keys are short because every byte is paid for on a cellular link; each key,
its unit and its range is documented in docs/protocol.md. Units are fixed:
km/h, degrees, metres, volts, degrees Celsius, percent, UTC milliseconds.

Ranges here are *schema* limits (a value outside them is malformed and goes to
the dead-letter table). Whether a well-formed fix is plausible (a jump, a
future time...) is the cloud's filters' business, not the schema's.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, field_validator

SCHEMA_VERSION: Final = 1

# Limits that keep one message bounded whatever a device sends.
MAX_FIXES_PER_BATCH = 1000
MAX_DTCS = 64

# 2000-01-01 .. 2100-01-01 in UTC milliseconds: outside this a time is garbage,
# not merely implausible.
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 4_102_444_800_000
# Seq and boot ids stay inside the range JSON numbers carry exactly (2**53).
MAX_JSON_INT = 2**53 - 1

TimeMs = Annotated[int, Strict(), Field(ge=MIN_TIME_MS, le=MAX_TIME_MS)]
Seq = Annotated[int, Strict(), Field(ge=1, le=MAX_JSON_INT)]
BootId = Annotated[int, Strict(), Field(ge=0, le=MAX_JSON_INT)]


class _Wire(BaseModel):
    # Unknown keys are refused so that a typo is a dead letter with a reason,
    # not a silently missing value. Scalars are Strict(): "12" is not a
    # number and true is not 1 on this wire (an int is accepted as a float).
    model_config = ConfigDict(extra="forbid", frozen=True)


class Engine(_Wire):
    """Latest OBD-II values known when the fix was recorded."""

    age: Annotated[int, Strict(), Field(ge=0, le=86_400_000)] | None = None  # ms since read
    rpm: Annotated[float, Strict(), Field(ge=0, le=20_000)] | None = None
    vss: Annotated[float, Strict(), Field(ge=0, le=400)] | None = None  # vehicle speed, km/h
    ect: Annotated[float, Strict(), Field(ge=-60, le=250)] | None = None  # coolant, degC
    load: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None  # engine load, %
    tps: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None  # throttle, %
    fuel: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None  # fuel level, %
    iat: Annotated[float, Strict(), Field(ge=-60, le=250)] | None = None  # intake air, degC
    maf: Annotated[float, Strict(), Field(ge=0, le=1000)] | None = None  # g/s
    vbat: Annotated[float, Strict(), Field(ge=0, le=60)] | None = None  # control module voltage, V
    run: Annotated[int, Strict(), Field(ge=0, le=10_000_000)] | None = None  # s since engine start
    odo: Annotated[float, Strict(), Field(ge=0, le=10_000_000)] | None = None  # km
    ign: StrictBool | None = None
    dtc: (
        Annotated[
            list[Annotated[str, Field(pattern=r"^[PCBU][0-9A-F]{4}$")]], Field(max_length=MAX_DTCS)
        ]
        | None
    ) = None


Accel = Annotated[float, Strict(), Field(ge=-100, le=100)]  # m/s², about 10 g either way


class Imu(_Wire):
    """Accelerometer peaks since the previous recorded fix, in the vehicle frame
    (x forward, y left), gravity removed, m/s². Devices with an IMU send them so
    harsh braking, acceleration and cornering are judged on the real peak, which
    speed deltas between fixes a few seconds apart smooth away."""

    ax_min: Accel | None = None  # strongest deceleration (negative: braking)
    ax_max: Accel | None = None  # strongest forward acceleration
    ay_max: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None  # |lateral| peak


class Fix(_Wire):
    """One recorded position. Never sent without a position fix (no 0,0 placeholders)."""

    seq: Seq  # outbox sequence number, monotonic per device, never reused
    t: TimeMs  # fix time (GNSS time), UTC ms
    lat: Annotated[float, Strict(), Field(ge=-90, le=90)]
    lon: Annotated[float, Strict(), Field(ge=-180, le=180)]
    spd: Annotated[float, Strict(), Field(ge=0, le=1000)] | None = None  # km/h over ground
    hdg: Annotated[float, Strict(), Field(ge=0, le=360)] | None = None  # course over ground, deg
    alt: Annotated[float, Strict(), Field(ge=-1000, le=20_000)] | None = None  # m above MSL
    hdop: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None
    sat: Annotated[int, Strict(), Field(ge=0, le=255)] | None = None  # satellites used
    fix: Literal[2, 3] | None = None  # 2D / 3D
    eng: Engine | None = None
    imu: Imu | None = None


class TelemetryBatch(_Wire):
    """``up/telemetry``: fixes of one agent boot, in seq order."""

    v: Literal[1] = SCHEMA_VERSION
    boot: BootId  # random id of the agent run that recorded these fixes
    fixes: Annotated[list[Fix], Field(min_length=1, max_length=MAX_FIXES_PER_BATCH)]


SeqRange = tuple[Seq, Seq]  # inclusive


class Ack(_Wire):
    """``down/ack``: the cloud has durably handled these (boot, seq) ranges.

    Handled means stored, already stored before, or dead-lettered: in every
    case the device must not send them again and may delete them.
    """

    v: Literal[1] = SCHEMA_VERSION
    boot: BootId
    seqs: Annotated[list[SeqRange], Field(min_length=1, max_length=MAX_FIXES_PER_BATCH)]

    @field_validator("seqs")
    @classmethod
    def _ranges_ordered(cls, v: list[SeqRange]) -> list[SeqRange]:
        for lo, hi in v:
            if lo > hi:
                raise ValueError(f"range [{lo}, {hi}] has first > last")
        return v


Count = Annotated[int, Strict(), Field(ge=0, le=MAX_JSON_INT)]


class OutboxHealth(_Wire):
    depth: Count = 0  # fixes waiting for a cloud ack
    oldest_ms: TimeMs | None = None  # fix time of the oldest unacked fix
    dropped: Count = 0  # fixes dropped by the size cap since the outbox was created
    bytes: Count = 0


class Status(_Wire):
    """``up/status`` (retained, and the Last Will with ``online: false``)."""

    model_config = ConfigDict(extra="allow", frozen=True)  # health grows over time

    v: Literal[1] = SCHEMA_VERSION
    online: bool
    t: TimeMs | None = None  # device wall clock when sent
    boot: BootId | None = None
    agent: Annotated[str, Field(max_length=64)] | None = None  # agent version
    outbox: OutboxHealth | None = None
    last_ack: TimeMs | None = None
    reconnects: Count | None = None
    health: dict[str, Any] | None = None


def seq_ranges(seqs: list[int]) -> list[SeqRange]:
    """Collapse sequence numbers into sorted inclusive ranges: [1,2,3,7] -> [(1,3),(7,7)]."""
    ranges: list[SeqRange] = []
    for s in sorted(set(seqs)):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges
