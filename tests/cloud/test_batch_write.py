"""The ingest batch writer: bulk COPY for new fixes, the idempotent path for repeats.

On a database of its own, so that the rows counted here are only this test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import asyncpg
import pytest

from fleet_cloud.db import init_connection
from fleet_cloud.store import PositionRows, write_batch
from fleet_wire import Fix
from tests.harness import migrated_database

T0 = int(datetime(2026, 11, 1, 10, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database() as d:
        yield d


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    await init_connection(c)  # as ingest's pool does
    yield c
    await c.close()


def rows(device: str, seqs: list[int], engine: bool = False) -> PositionRows:
    batch = PositionRows()
    now = datetime.now(UTC)
    for s in seqs:
        fix = {"seq": s, "t": T0 + s * 1000, "lat": 52.5, "lon": 13.4 + s / 1e4}
        if engine:
            fix["eng"] = {"age": 100, "rpm": 900.0 + s}
        batch.add(device, 1, Fix.model_validate(fix), now, None)
    return batch


async def stored(conn: asyncpg.Connection, device: str) -> list[tuple[int, float, str | None]]:
    recs = await conn.fetch(
        "SELECT seq, lon, engine::text AS engine FROM positions WHERE device_id = $1 ORDER BY seq",
        device,
    )
    return [(r["seq"], r["lon"], r["engine"]) for r in recs]


async def test_new_fixes_are_all_stored(conn: asyncpg.Connection) -> None:
    assert await write_batch(conn, rows("bw-new", [1, 2, 3], engine=True), [], []) == 3
    got = await stored(conn, "bw-new")
    assert [s for s, _, _ in got] == [1, 2, 3]
    assert got[0][2] == '{"age": 100, "rpm": 901.0}'  # jsonb through the bulk path
    assert await conn.fetchval("SELECT count(*) FROM engine_samples WHERE device_id='bw-new'") == 3


async def test_a_batch_that_repeats_stored_fixes_stores_only_the_new_ones(
    conn: asyncpg.Connection,
) -> None:
    assert await write_batch(conn, rows("bw-mixed", [1, 2]), [], []) == 2
    # 2 is a retransmission: the bulk COPY fails on the key and the batch is
    # written again through the idempotent path, in the same transaction.
    assert await write_batch(conn, rows("bw-mixed", [2, 3, 4], engine=True), [], []) == 2
    assert [s for s, _, _ in await stored(conn, "bw-mixed")] == [1, 2, 3, 4]
    # the batch's engine samples are stored by the fallback too (seq 2's first copy had none)
    assert (
        await conn.fetchval("SELECT count(*) FROM engine_samples WHERE device_id='bw-mixed'") == 3
    )
    # a whole batch of repeats stores nothing and fails nothing
    assert await write_batch(conn, rows("bw-mixed", [1, 2, 3, 4]), [], []) == 0
    assert len(await stored(conn, "bw-mixed")) == 4


async def test_a_duplicate_inside_one_batch_is_stored_once(conn: asyncpg.Connection) -> None:
    assert await write_batch(conn, rows("bw-inner", [5, 6, 5]), [], []) == 2
    assert [s for s, _, _ in await stored(conn, "bw-inner")] == [5, 6]


async def test_the_fallback_keeps_the_callers_transaction_usable(
    conn: asyncpg.Connection,
) -> None:
    """The failed COPY is undone to its savepoint; the outer transaction commits the rest."""
    await write_batch(conn, rows("bw-tx", [1]), [], [])
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO dead_letters (topic, reason, detail) VALUES ('t', 'r', 'd')"
        )
        assert await write_batch(conn, rows("bw-tx", [1, 2]), [], []) == 1
    assert [s for s, _, _ in await stored(conn, "bw-tx")] == [1, 2]
    assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE topic = 't'") == 1
