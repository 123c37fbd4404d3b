"""Set-based, idempotent writes of ingest batches: one transaction per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from fleet_wire import Fix


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@dataclass
class PositionColumns:
    """Positions of one batch held column-wise, ready for unnest()."""

    device_id: list[str] = field(default_factory=list)
    boot_id: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    fix_time: list[datetime] = field(default_factory=list)
    recv_time: list[datetime] = field(default_factory=list)
    vehicle_id: list[int | None] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    speed: list[float | None] = field(default_factory=list)
    heading: list[float | None] = field(default_factory=list)
    altitude: list[float | None] = field(default_factory=list)
    hdop: list[float | None] = field(default_factory=list)
    sats: list[int | None] = field(default_factory=list)
    fix_type: list[int | None] = field(default_factory=list)
    engine: list[object] = field(default_factory=list)
    filter_reason: list[str | None] = field(default_factory=list)
    # fixes that carried engine values, as engine_samples rows
    engine_rows: list[tuple[object, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    def add(
        self,
        device_id: str,
        boot: int,
        fix: Fix,
        recv: datetime,
        vehicle_id: int | None,
        filter_reason: str | None = None,
    ) -> None:
        self.device_id.append(device_id)
        self.boot_id.append(boot)
        self.seq.append(fix.seq)
        self.fix_time.append(ms_to_dt(fix.t))
        self.recv_time.append(recv)
        self.vehicle_id.append(vehicle_id)
        self.lat.append(fix.lat)
        self.lon.append(fix.lon)
        self.speed.append(fix.spd)
        self.heading.append(fix.hdg)
        self.altitude.append(fix.alt)
        self.hdop.append(fix.hdop)
        self.sats.append(fix.sat)
        self.fix_type.append(fix.fix)
        self.engine.append(fix.eng.model_dump(exclude_none=True) if fix.eng else None)
        self.filter_reason.append(filter_reason)
        e = fix.eng
        if e is not None:
            sample_ms = fix.t - (e.age or 0)
            self.engine_rows.append((
                device_id, boot, fix.seq, ms_to_dt(sample_ms), vehicle_id, e.rpm, e.vss, e.ect,
                e.load, e.tps, e.fuel, e.iat, e.maf, e.vbat, e.run, e.odo, e.ign,
                ",".join(e.dtc) if e.dtc is not None else None,
            ))  # fmt: skip


_INSERT_POSITIONS = """
INSERT INTO positions (device_id, boot_id, seq, fix_time, recv_time, vehicle_id, lat, lon,
                       speed, heading, altitude, hdop, sats, fix_type, engine, filter_reason)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[],
                     $5::timestamptz[], $6::bigint[], $7::float8[], $8::float8[],
                     $9::real[], $10::real[], $11::real[], $12::real[], $13::smallint[],
                     $14::smallint[], $15::jsonb[], $16::text[])
ON CONFLICT DO NOTHING
"""


_INSERT_ENGINE = """
INSERT INTO engine_samples (device_id, boot_id, seq, sample_time, vehicle_id, rpm, vss, ect,
                            load, tps, fuel, iat, maf, vbat, run_s, odo_km, ign, dtc)
SELECT d, b, s, st, v, rpm, vss, ect, load, tps, fuel, iat, maf, vbat, run, odo, ign,
       string_to_array(dtc, ',')
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::bigint[],
            $6::real[], $7::real[], $8::real[], $9::real[], $10::real[], $11::real[],
            $12::real[], $13::real[], $14::real[], $15::int[], $16::float8[], $17::bool[],
            $18::text[])
     AS u(d, b, s, st, v, rpm, vss, ect, load, tps, fuel, iat, maf, vbat, run, odo, ign, dtc)
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    reason: str
    detail: str
    payload: bytes | None
    device_id: str | None


@dataclass(frozen=True, slots=True)
class StatusRow:
    device_id: str
    online: bool
    status: dict[str, object]
    at: datetime


async def write_batch(
    conn: asyncpg.Connection,
    positions: PositionColumns,
    dead: list[DeadLetter],
    statuses: list[StatusRow],
) -> int:
    """Write one batch atomically; return how many positions were new."""
    inserted = 0
    async with conn.transaction():
        if len(positions):
            p = positions
            result = await conn.execute(
                _INSERT_POSITIONS,
                p.device_id,
                p.boot_id,
                p.seq,
                p.fix_time,
                p.recv_time,
                p.vehicle_id,
                p.lat,
                p.lon,
                p.speed,
                p.heading,
                p.altitude,
                p.hdop,
                p.sats,
                p.fix_type,
                p.engine,
                p.filter_reason,
            )
            inserted = int(result.rsplit(" ", 1)[1])
        if positions.engine_rows:
            await conn.execute(
                _INSERT_ENGINE, *(list(c) for c in zip(*positions.engine_rows, strict=True))
            )
        if dead:
            await conn.executemany(
                """INSERT INTO dead_letters (device_id, topic, reason, detail, payload)
                   VALUES ($1, $2, $3, $4, $5)""",
                [(d.device_id, d.topic, d.reason, d.detail, d.payload) for d in dead],
            )
        if statuses:
            latest = {s.device_id: s for s in sorted(statuses, key=lambda s: s.at)}
            await conn.executemany(
                """INSERT INTO device_status (device_id, online, status, updated_at)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (device_id) DO UPDATE
                   SET online = EXCLUDED.online, status = EXCLUDED.status,
                       updated_at = EXCLUDED.updated_at""",
                [(s.device_id, s.online, s.status, s.at) for s in latest.values()],
            )
    return inserted
