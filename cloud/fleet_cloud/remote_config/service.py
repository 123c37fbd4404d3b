"""The remote-config background task of an API process.

Each tick (every ``remote_tick_s``, or at once when an API request kicks it):
publish desired configs not yet on the broker (retained, QoS 1), publish
pending commands, mark unanswered commands expired, advance running rollouts,
and now and then reconcile every configured device (a vehicle moved to
another fleet, a device registered under a configured tenant). Several API
nodes may run this; a session advisory lock lets one of them tick at a time,
and all state is in the database, so a restart resumes every rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from fleet_cloud.remote_config import commands, desired, rollouts
from fleet_cloud.remote_config.control import ControlClient
from fleet_cloud.remote_config.signing import SigningKeyError, load_signing_key
from fleet_cloud.settings import Settings
from fleet_wire import Down, down_topic, encode_json

log = logging.getLogger(__name__)

TICK_LOCK = 0x72656D6F7465  # "remote"
RECONCILE_EVERY_S = 60.0


class RemoteConfigService:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.control = ControlClient(settings)
        self._wake = asyncio.Event()
        self._next_reconcile = time.monotonic() + RECONCILE_EVERY_S

    def kick(self) -> None:
        """Something changed: tick now rather than at the next period."""
        self._wake.set()

    def signing_key(self) -> bytes:
        return load_signing_key(self.settings)

    async def run(self) -> None:
        control = asyncio.create_task(self.control.run(), name="fleet-control-mqtt")
        try:
            with contextlib.suppress(SigningKeyError):
                self.signing_key()
                log.info("remote config: signing key loaded")
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.remote_tick_s)
                self._wake.clear()
                try:
                    await self.tick()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                    log.warning("remote config tick failed (%s); retrying", e)
                    await asyncio.sleep(2.0)
                except Exception:
                    log.exception("remote config tick failed unexpectedly; retrying")
                    await asyncio.sleep(2.0)
        finally:
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control

    async def tick(self) -> None:
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", TICK_LOCK):
                return  # another node is ticking
            try:
                await self._rollouts(conn)
                await commands.expire(conn)
                if self.control.connected.is_set():
                    await self._publish_configs(conn)
                    await self.publish_commands(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", TICK_LOCK)

    async def _rollouts(self, conn: asyncpg.Connection) -> None:
        ids = await rollouts.active_ids(conn)
        reconcile = time.monotonic() >= self._next_reconcile
        if not ids and not reconcile:
            return
        try:
            key = self.signing_key()
        except SigningKeyError as e:
            if ids:
                log.warning("rollouts %s wait: %s", ids, e)
            return
        for rid in ids:
            try:
                async with conn.transaction():
                    state = await rollouts.step(conn, key, rid)
            except desired.DeviceConfigError as e:
                # A layer edited since makes a member's config invalid: the
                # rollout waits (and says why) until someone fixes the layer.
                log.warning("rollout %d cannot advance: %s", rid, e)
                continue
            log.debug("rollout %d: %s", rid, state)
        if reconcile:
            self._next_reconcile = time.monotonic() + RECONCILE_EVERY_S
            await self._reconcile(conn, key)

    async def _reconcile(self, conn: asyncpg.Connection, key: bytes) -> None:
        devices = [
            r["device_id"]
            for r in await conn.fetch(
                """SELECT device_id FROM devices WHERE tenant_id IN
                       (SELECT tenant_id FROM config_layers)
                   UNION SELECT device_id FROM device_config_desired"""
            )
        ]
        try:
            async with conn.transaction():
                issued = await desired.recompute(conn, key, devices)
        except desired.DeviceConfigError as e:
            log.warning("reconcile skipped: %s", e)
            return
        if issued:
            log.info("reconcile: %d devices got a new config version", len(issued))

    async def _publish_configs(self, conn: asyncpg.Connection) -> None:
        # Disabling a device clears its retained messages on the broker
        # (devices_admin): remember that it no longer holds the config, so it is
        # published again once the device is enabled, and never to a disabled one.
        await conn.execute(
            """UPDATE device_config_desired SET published_version = 0
               WHERE published_version > 0
                 AND device_id IN (SELECT device_id FROM devices WHERE NOT enabled)"""
        )
        rows = await conn.fetch(
            """SELECT c.* FROM device_config_desired c JOIN devices d USING (device_id)
               WHERE c.published_version < c.version AND d.enabled
               ORDER BY c.device_id LIMIT 500"""
        )
        for row in rows:
            doc = desired.document(row)
            topic = down_topic(doc.device_id, Down.CONFIG)
            if not await self.control.publish(topic, encode_json(doc), retain=True):
                return  # disconnected: the next tick retries
            await conn.execute(
                """UPDATE device_config_desired
                   SET published_version = greatest(published_version, $2), published_at = now()
                   WHERE device_id = $1""",
                doc.device_id,
                doc.version,
            )

    async def publish_commands(self, conn: asyncpg.Connection) -> None:
        for row in await commands.pending(conn):
            if not await self.publish_command(row):
                return
            await commands.mark_sent(conn, row["id"])

    async def publish_command(self, row: asyncpg.Record) -> bool:
        left = commands.expiry_s(row)
        if left < 1:
            return True  # expired meanwhile: expire() marks it, nothing to send
        cmd = commands.wire(row)
        topic = down_topic(row["device_id"], Down.CMD)
        return await self.control.publish(topic, encode_json(cmd), expiry_s=left)
