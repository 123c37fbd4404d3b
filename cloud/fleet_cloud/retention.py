"""Raw data retention: positions and engine samples older than N days go.

On TimescaleDB this is a retention policy (whole chunks dropped by the
extension's scheduler); on plain PostgreSQL the service deletes in batches so
no single statement holds locks or bloats the WAL for long. Statistics and
events are kept.
"""

from __future__ import annotations

import asyncpg

from fleet_cloud.migrate import storage_mode

_TABLES = (("positions", "fix_time"), ("engine_samples", "sample_time"))
_BATCH = 50_000


async def apply(conn: asyncpg.Connection, days: int) -> int:
    """Enforce the retention; rows deleted (0 on TimescaleDB, where a policy does it)."""
    if await storage_mode(conn) == "timescaledb":
        for table, _ in _TABLES:
            await conn.execute("SELECT remove_retention_policy($1, if_exists => true)", table)
            await conn.execute(
                "SELECT add_retention_policy($1, make_interval(days => $2))", table, days
            )
        return 0
    deleted = 0
    for table, column in _TABLES:
        while True:
            status = await conn.execute(
                f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM {table}
                        WHERE {column} < now() - make_interval(days => $1) LIMIT {_BATCH}))""",
                days,
            )
            n = int(status.rsplit(" ", 1)[1])
            deleted += n
            if n < _BATCH:
                break
    return deleted
