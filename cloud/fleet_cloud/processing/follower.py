"""Follow positions by ingest_seq from a checkpoint, without missing or repeating a row.

Two facts make "read everything after my checkpoint" wrong:

- identity values are taken before commit, so seq 105 can be visible while
  seq 100 (a slower ingest transaction) is not yet;
- INSERT ... ON CONFLICT DO NOTHING (and any rollback) consumes values that
  never appear: holes are normal.

So the checkpoint is ``high_seq`` (every seq at or below it was read, except
the listed holes) plus the holes themselves, each with when it was first
seen and the snapshot xmax at that moment. Rows past a hole are processed at
once (processing is per vehicle in fix-time order anyway, so arrival order
does not matter); each poll also asks for rows that filled a hole. A hole is
given up as final only when BOTH

- every transaction that was running when it was first seen has ended
  (pg_snapshot_xmin of now >= the xmax recorded then), so a slow ingest
  transaction holding that value, however long, is waited for; and
- a grace period has passed, which covers the instant between a
  transaction taking a value and getting its transaction id.

The checkpoint is updated in the same transaction as everything derived from
the rows, so a crash repeats nothing and loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg

# [lo, hi, first_seen_ms, xmax_when_first_seen]
Hole = list[int]

_COLUMNS = """ingest_seq, device_id, boot_id, seq, fix_time, recv_time, vehicle_id, lat, lon, speed,
              engine, imu, filter_reason"""


@dataclass
class Checkpoint:
    name: str
    high_seq: int = 0
    holes: list[Hole] = field(default_factory=list)

    def hole_count(self) -> int:
        return sum(h[1] - h[0] + 1 for h in self.holes)


def subtract(holes: list[Hole], seqs: set[int]) -> list[Hole]:
    """Holes minus the seqs that filled them (a range may split)."""
    out: list[Hole] = []
    for lo, hi, seen, xmax in holes:
        start = lo
        for s in sorted(x for x in seqs if lo <= x <= hi):
            if s > start:
                out.append([start, s - 1, seen, xmax])
            start = s + 1
        if start <= hi:
            out.append([start, hi, seen, xmax])
    return out


class Follower:
    def __init__(self, name: str = "main", batch: int = 5000, grace_s: float = 30.0) -> None:
        self.name = name
        self.batch = batch
        self.grace_ms = int(grace_s * 1000)

    async def load(self, conn: asyncpg.Connection) -> Checkpoint:
        """Lock and read the checkpoint (call inside the processing transaction)."""
        await conn.execute(
            "INSERT INTO processing_checkpoint (name) VALUES ($1) ON CONFLICT DO NOTHING",
            self.name,
        )
        row = await conn.fetchrow(
            "SELECT high_seq, holes FROM processing_checkpoint WHERE name = $1 FOR UPDATE",
            self.name,
        )
        assert row is not None
        return Checkpoint(self.name, int(row["high_seq"]), [list(h) for h in row["holes"]])

    async def poll(
        self, conn: asyncpg.Connection, cp: Checkpoint
    ) -> tuple[list[asyncpg.Record], Checkpoint]:
        """Rows not processed yet (hole fillers first, then new), and the next checkpoint."""
        filled: list[asyncpg.Record] = []
        if cp.holes:
            filled = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM positions p
                    JOIN unnest($1::bigint[], $2::bigint[]) AS h(lo, hi)
                      ON p.ingest_seq BETWEEN h.lo AND h.hi
                    ORDER BY ingest_seq""",
                [h[0] for h in cp.holes],
                [h[1] for h in cp.holes],
            )
        new = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM positions WHERE ingest_seq > $1
                ORDER BY ingest_seq LIMIT $2""",
            cp.high_seq,
            self.batch,
        )
        # Taken after the reads: a transaction holding a value we found missing
        # either had its transaction id by now (so it is below this xmax) or is
        # in the tiny window the grace period covers.
        snap = await conn.fetchrow(
            """SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
                      pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax"""
        )
        assert snap is not None
        now_ms = int(time.time() * 1000)
        holes = subtract(cp.holes, {int(r["ingest_seq"]) for r in filled})
        high = cp.high_seq
        for r in new:
            s = int(r["ingest_seq"])
            if s > high + 1:
                holes.append([high + 1, s - 1, now_ms, int(snap["xmax"])])
            high = s
        holes = [
            h for h in holes if not (now_ms - h[2] >= self.grace_ms and int(snap["xmin"]) >= h[3])
        ]
        return [*filled, *new], Checkpoint(cp.name, high, holes)

    async def save(self, conn: asyncpg.Connection, cp: Checkpoint) -> None:
        await conn.execute(
            """UPDATE processing_checkpoint SET high_seq = $2, holes = $3, updated_at = now()
               WHERE name = $1""",
            cp.name,
            cp.high_seq,
            cp.holes,
        )
