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


# Columns of positions that ingest writes, in the order of PositionRows' tuples.
POSITION_COLUMNS = (
    "device_id", "boot_id", "seq", "fix_time", "recv_time", "vehicle_id", "lat", "lon",
    "speed", "heading", "altitude", "hdop", "sats", "fix_type", "engine", "filter_reason",
    "imu",
)  # fmt: skip
_COLS = ", ".join(POSITION_COLUMNS)


@dataclass
class PositionRows:
    """Positions of one batch, one tuple per fix (POSITION_COLUMNS order), ready for COPY."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    # fixes that carried engine values, as engine_samples rows
    engine_rows: list[tuple[object, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def add(
        self,
        device_id: str,
        boot: int,
        fix: Fix,
        recv: datetime,
        vehicle_id: int | None,
        filter_reason: str | None = None,
    ) -> None:
        e = fix.eng
        self.rows.append((
            device_id, boot, fix.seq, ms_to_dt(fix.t), recv, vehicle_id, fix.lat, fix.lon,
            fix.spd, fix.hdg, fix.alt, fix.hdop, fix.sat, fix.fix,
            e.model_dump(exclude_none=True) if e is not None else None,
            filter_reason,
            fix.imu.model_dump(exclude_none=True) if fix.imu else None,
        ))  # fmt: skip
        if e is not None:
            sample_ms = fix.t - (e.age or 0)
            self.engine_rows.append((
                device_id, boot, fix.seq, ms_to_dt(sample_ms), vehicle_id, e.rpm, e.vss, e.ect,
                e.load, e.tps, e.fuel, e.iat, e.maf, e.vbat, e.run, e.odo, e.ign,
                ",".join(e.dtc) if e.dtc is not None else None,
            ))  # fmt: skip


# Positions are written optimistically: COPY straight into positions inside a
# savepoint, which is three to four times the rate of any INSERT ... ON CONFLICT
# (COPY inserts rows in bulk). A batch holding a key that is already stored (a
# retransmission after a lost ack, a QoS 1 redelivery) fails on the primary key,
# rolls back to the savepoint and takes the idempotent path: COPY into a
# per-connection staging table, then one INSERT ... ON CONFLICT DO NOTHING from it.
# Duplicates are the exception, so the bulk path is the common one, and storage
# stays keyed either way. engine and imu are dicts, encoded by the connection's
# binary jsonb codec (fleet_cloud.db).
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS positions_stage ON COMMIT DELETE ROWS AS
SELECT {_COLS} FROM positions WITH NO DATA
"""
_INSERT_POSITIONS = f"""
INSERT INTO positions ({_COLS}) SELECT {_COLS} FROM positions_stage ON CONFLICT DO NOTHING
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


async def _write_positions(conn: asyncpg.Connection, positions: PositionRows) -> int:
    """Store the batch's positions inside the caller's transaction; return how many were new."""
    try:
        async with conn.transaction():  # a savepoint: a duplicate undoes only this COPY
            await conn.copy_records_to_table(
                "positions", records=positions.rows, columns=POSITION_COLUMNS
            )
        return len(positions)
    except asyncpg.UniqueViolationError:
        pass
    await conn.execute(_CREATE_STAGE)
    await conn.copy_records_to_table(
        "positions_stage", records=positions.rows, columns=POSITION_COLUMNS
    )
    result = await conn.execute(_INSERT_POSITIONS)
    return int(result.rsplit(" ", 1)[1])


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
    positions: PositionRows,
    dead: list[DeadLetter],
    statuses: list[StatusRow],
) -> int:
    """Write one batch atomically; return how many positions were new."""
    inserted = 0
    async with conn.transaction():
        if len(positions):
            inserted = await _write_positions(conn, positions)
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
