"""The ingest_seq follower: out-of-order commits and holes, against real transactions."""

from __future__ import annotations

import asyncio

import asyncpg

from fleet_cloud.processing.follower import Checkpoint, Follower, subtract
from tests.processing.conftest import new_vehicle

_INSERT = """INSERT INTO positions
                 (device_id, boot_id, seq, fix_time, recv_time, vehicle_id, lat, lon)
             VALUES ($1, 1, $2, '2026-01-01Z', now(), $3, 52.5, 13.4) ON CONFLICT DO NOTHING
             RETURNING ingest_seq"""


def test_subtract_splits_ranges() -> None:
    assert subtract([[1, 10, 0, 0]], {1, 5, 10}) == [[2, 4, 0, 0], [6, 9, 0, 0]]
    assert subtract([[3, 3, 7, 8]], {3}) == []
    assert subtract([[3, 4, 7, 8]], set()) == [[3, 4, 7, 8]]


async def _poll(conn: asyncpg.Connection, f: Follower) -> tuple[list[int], Checkpoint]:
    async with conn.transaction():
        cp = await f.load(conn)
        rows, nxt = await f.poll(conn, cp)
        await f.save(conn, nxt)
    return [int(r["ingest_seq"]) for r in rows], nxt


async def test_late_commit_and_conflict_holes(pool: asyncpg.Pool) -> None:
    _, vid, dev = await new_vehicle(pool)
    f = Follower("test-holes", batch=1000, grace_s=0.0)
    async with pool.acquire() as reader, pool.acquire() as slow, pool.acquire() as fast:
        # Start where the table is now (other tests share it).
        async with reader.transaction():
            cp = await f.load(reader)
            top = await reader.fetchval("SELECT coalesce(max(ingest_seq), 0) FROM positions")
            cp.high_seq = int(top)
            await f.save(reader, cp)

        # A slow ingest transaction takes a value first and commits last.
        tx = slow.transaction()
        await tx.start()
        s_slow = await slow.fetchval(_INSERT, dev, 1, vid)
        s_fast = await fast.fetchval(_INSERT, dev, 2, vid)
        assert s_fast > s_slow
        seen, cp = await _poll(reader, f)
        assert s_fast in seen and s_slow not in seen
        # The slow value is a hole: even with no grace it stays open, because
        # the transaction that was running when it was seen has not ended.
        assert any(h[0] <= s_slow <= h[1] for h in cp.holes)
        seen, cp = await _poll(reader, f)
        assert seen == [] and any(h[0] <= s_slow <= h[1] for h in cp.holes)
        await tx.commit()
        seen, cp = await _poll(reader, f)
        assert seen == [s_slow], "the late commit is picked up from its hole"
        assert not any(h[0] <= s_slow <= h[1] for h in cp.holes)

        # ON CONFLICT DO NOTHING burns a value that never appears.
        assert await fast.fetchval(_INSERT, dev, 2, vid) is None
        s_next = await fast.fetchval(_INSERT, dev, 3, vid)
        seen, cp = await _poll(reader, f)
        assert seen == [s_next]
        # ...and once every transaction running when it was seen has ended, the
        # hole is final. (Transaction ids are cluster-wide: a transaction in any
        # database of the server holds this back, so poll until it happens.)
        for _ in range(600):
            seen, cp = await _poll(reader, f)
            assert seen == []
            if cp.holes == []:
                break
            await asyncio.sleep(0.05)
        assert cp.holes == []

        # Nothing is returned twice.
        seen, _ = await _poll(reader, f)
        assert seen == []


async def test_hole_waits_for_grace(pool: asyncpg.Pool) -> None:
    _, vid, dev = await new_vehicle(pool)
    f = Follower("test-grace", batch=1000, grace_s=3600.0)
    async with pool.acquire() as conn:
        async with conn.transaction():
            cp = await f.load(conn)
            cp.high_seq = int(
                await conn.fetchval("SELECT coalesce(max(ingest_seq), 0) FROM positions")
            )
            await f.save(conn, cp)
        await conn.fetchval(_INSERT, dev, 1, vid)
        assert await conn.fetchval(_INSERT, dev, 1, vid) is None  # burns a value
        s = await conn.fetchval(_INSERT, dev, 2, vid)
        seen, cp = await _poll(conn, f)
        assert s in seen
        assert cp.hole_count() == 1, "kept until the grace period is over"
