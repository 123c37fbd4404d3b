"""Commands to one device: argument rules, storage, the wire message, expiry.

Life of a command: ``pending`` (stored, not yet on the broker) -> ``sent``
(the broker acknowledged it, with a Message Expiry Interval matching
expires_at) -> the device's answer (``done`` / ``rejected`` / ``failed`` /
``expired``) or, with no answer by expires_at, ``expired`` set by the cloud.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet_wire.remote import Command, CommandKind


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class SetIntervalArgs(_Args):
    # The sampler's intervals (fleet_edge.config.SamplerConfig); at least one.
    min_interval_s: Annotated[float, Field(ge=0, le=86400)] | None = None
    max_interval_s: Annotated[float, Field(gt=0, le=86400)] | None = None


class ClearOutboxArgs(_Args):
    confirm: bool = True


ARGS: Final[dict[str, type[_Args]]] = {
    "locate": NoArgs,
    "set_interval": SetIntervalArgs,
    "restart": NoArgs,
    "clear_outbox": ClearOutboxArgs,
}
# What loses data needs an explicit confirm: true in the request.
NEEDS_CONFIRM: Final = frozenset({"clear_outbox"})
EXPIRY_MIN_S, EXPIRY_MAX_S, EXPIRY_DEFAULT_S = 5, 24 * 3600, 300


class CommandArgsError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def checked_args(kind: str, args: dict[str, Any], confirm: bool) -> dict[str, Any]:
    """The arguments sent to the device; CommandArgsError names the culprit."""
    if kind in NEEDS_CONFIRM and not confirm:
        raise CommandArgsError("confirm", f"{kind} loses data on the device: send confirm: true")
    try:
        model = ARGS[kind].model_validate(args)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CommandArgsError(f"args.{where}" if where else "args", str(first["msg"])) from None
    out = model.model_dump(exclude_none=True)
    if kind == "set_interval":
        if not out:
            raise CommandArgsError("args", "set_interval needs min_interval_s or max_interval_s")
        lo, hi = out.get("min_interval_s"), out.get("max_interval_s")
        if lo is not None and hi is not None and hi < lo:
            raise CommandArgsError("args.max_interval_s", "must be >= min_interval_s")
    if kind in NEEDS_CONFIRM:
        out["confirm"] = True  # the agent checks it again (defence in depth)
    return out


async def create(
    conn: asyncpg.Connection,
    *,
    device_id: str,
    tenant_id: int,
    kind: CommandKind,
    args: dict[str, Any],
    expires_in_s: int,
    created_by: int | None,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO device_commands
               (id, device_id, tenant_id, kind, args, expires_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        uuid.uuid4().hex,
        device_id,
        tenant_id,
        kind,
        args,
        datetime.now(UTC) + timedelta(seconds=expires_in_s),
        created_by,
    )
    assert row is not None
    return row


def wire(row: asyncpg.Record) -> Command:
    return Command(
        id=row["id"],
        kind=row["kind"],
        args=row["args"],
        expires_at=int(row["expires_at"].timestamp() * 1000),
    )


def expiry_s(row: asyncpg.Record) -> int:
    return int((row["expires_at"] - datetime.now(UTC)).total_seconds())


async def pending(conn: asyncpg.Connection, limit: int = 200) -> list[asyncpg.Record]:
    """Unexpired commands not yet acknowledged by the broker, oldest first.

    Publish first, mark sent after: a crash in between sends the command again
    with the same id, which the agent executes once (it keeps recent ids). The
    API publishes a new command itself; this picks up what it could not (the
    grace keeps the two from both sending a fresh one).
    """
    return list(
        await conn.fetch(
            """SELECT * FROM device_commands WHERE status = 'pending' AND expires_at > now()
                 AND created_at < now() - interval '3 seconds'
               ORDER BY created_at LIMIT $1""",
            limit,
        )
    )


async def mark_sent(conn: asyncpg.Connection, command_id: str) -> None:
    # The device's answer may already be in (it can beat this update).
    await conn.execute(
        """UPDATE device_commands SET sent_at = coalesce(sent_at, now()),
               status = CASE WHEN status = 'pending' THEN 'sent' ELSE status END
           WHERE id = $1""",
        command_id,
    )


async def expire(conn: asyncpg.Connection) -> int:
    """Mark commands that got no answer before their expiry; returns how many."""
    done = await conn.fetch(
        """UPDATE device_commands
           SET status = 'expired',
               message = CASE WHEN status = 'pending' THEN 'expired before it reached the broker'
                              ELSE 'no answer from the device before expiry' END
           WHERE status IN ('pending', 'sent') AND expires_at <= now() RETURNING id"""
    )
    return len(done)
