"""Apply migrations/NNN_*.sql in order, each once, under an advisory lock.

Plain SQL files so an operator can read exactly what runs; the runner only
orders them, records what was applied and keeps two starters from racing.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every runner.
_LOCK_KEY = 0x666C656574  # "fleet"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every bundled migration, in order."""
    folder = resources.files("fleet_cloud") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(dsn: str) -> list[str]:
    """Apply what is missing; return the versions applied now."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("applied migration %s", version)
            applied_now.append(version)
    finally:
        await conn.close()  # also releases the advisory lock
    return applied_now


async def storage_mode(conn: asyncpg.Connection) -> str:
    """'timescaledb' when positions is a hypertable, else 'postgresql'."""
    has_ts = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    return "timescaledb" if has_ts else "postgresql"
