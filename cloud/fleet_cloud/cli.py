"""``fleet-cloud``: run and administer the cloud side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Annotated

import asyncpg
import orjson
import typer

from fleet_cloud import broker_cli, directory
from fleet_cloud.settings import Settings

log = logging.getLogger("fleet_cloud")

app = typer.Typer(
    help="Fleet telemetry cloud: database migrations, API + dashboard + ingest, administration.",
    no_args_is_help=True,
    add_completion=False,
)

DsnOpt = Annotated[
    str | None, typer.Option("--dsn", help="PostgreSQL DSN (default: FLEET_DATABASE_URL)")
]


def _settings(dsn: str | None = None) -> Settings:
    s = Settings()
    if dsn:
        s.database_url = dsn
    return s


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(1)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )


class _RedactTokens(logging.Filter):
    """Uvicorn logs each WebSocket handshake with its URL, which carries the JWT."""

    _token = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                self._token.sub(r"\1<redacted>", a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        return True


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as e:
        _fail(f"cannot connect to the database ({e})")
        raise  # unreachable


@app.command()
def migrate(dsn: DsnOpt = None) -> None:
    """Create or upgrade the database schema (idempotent)."""
    from fleet_cloud.migrate import migrate as run_migrations
    from fleet_cloud.migrate import storage_mode

    s = _settings(dsn)

    async def go() -> None:
        try:
            applied = await run_migrations(s.database_url)
        except (OSError, asyncpg.PostgresError) as e:
            _fail(f"migration failed: {e}")
        conn = await _connect(s.database_url)
        mode = await storage_mode(conn)
        await conn.close()
        typer.echo(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
        typer.echo(f"storage: {mode}")

    asyncio.run(go())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (FLEET_HTTP_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (FLEET_HTTP_PORT)")] = None,
    no_ingest: Annotated[
        bool, typer.Option("--no-ingest", help="API only; ingest runs elsewhere")
    ] = False,
    log_level: str = "info",
    access_log: Annotated[
        bool, typer.Option(help="log every request (tokens stay out of logs by default)")
    ] = False,
) -> None:
    """Run the API, WebSocket hub, dashboard and (unless --no-ingest) MQTT ingest."""
    import uvicorn

    from fleet_cloud.api.app import create_app

    _logging(log_level)
    logging.getLogger("uvicorn.error").addFilter(_RedactTokens())
    s = _settings()
    uvicorn.run(
        create_app(s, run_ingest=not no_ingest),
        host=host or s.http_host,
        port=port or s.http_port,
        log_level=log_level,
        access_log=access_log,
        ws_max_size=64 * 1024,
    )


@app.command()
def ingest(
    workers: Annotated[int, typer.Option(help="ingest consumers in this process")] = 1,
    first_index: Annotated[int, typer.Option(help="index of the first worker's client id")] = 0,
    log_level: str = "info",
) -> None:
    """Run ingest workers only (scale-out: start more of these)."""
    from fleet_cloud.db import create_pool
    from fleet_cloud.ingest.consumer import IngestWorker
    from fleet_cloud.live import LiveState
    from fleet_cloud.registry import DeviceRegistry
    from fleet_cloud.relay import RedisRelay

    _logging(log_level)
    s = _settings()

    async def go() -> None:
        pool = await create_pool(s.database_url, s.db_pool_size)
        registry = DeviceRegistry(pool)
        live = LiveState()
        ws = [IngestWorker(s, pool, registry, live, first_index + i) for i in range(workers)]
        relay = RedisRelay(live, s.redis_url, s.redis_prefix) if s.redis_url else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(w.run()) for w in ws]
        if relay is not None:  # live updates reach the API nodes through Redis
            await relay.start()
            tasks.append(asyncio.create_task(relay.run()))
        else:
            log.warning("no FLEET_REDIS_URL: live updates from this process reach no dashboard")
        await stop.wait()
        for w in ws:  # what was received is written and acked while connected
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.drain(), timeout=5)
        for t in tasks:
            t.cancel()
        if relay is not None:  # stores the states of the last second (relay.STORE_PERIOD_S)
            await relay.close()
        await pool.close()

    asyncio.run(go())


@app.command()
def process(
    once: Annotated[
        bool, typer.Option("--once", help="process what is stored now, then exit")
    ] = False,
    dsn: DsnOpt = None,
    log_level: str = "info",
) -> None:
    """Run processing only (geofences, events, trips, webhooks): one owner per database."""
    from fleet_cloud.db import create_pool
    from fleet_cloud.processing import runtime
    from fleet_cloud.processing.config import ProcessingSettings
    from fleet_cloud.processing.service import Processor

    _logging(log_level)
    s = _settings(dsn)

    async def go() -> None:
        try:
            pool = await create_pool(s.database_url, 4)
        except (OSError, asyncpg.PostgresError) as e:
            _fail(f"cannot connect to the database ({e})")
        try:
            if once:
                proc = Processor(pool, ProcessingSettings())
                while await proc.step():
                    pass
                await proc.presence()
                c = proc.counters
                typer.echo(f"processed {c['rows']} positions: {c['events']} new events, "
                           f"{c['replays']} late-data re-evaluations")  # fmt: skip
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            _, tasks = runtime.start(s.database_url, pool, None, ProcessingSettings(), stop)
            await stop.wait()
            for t in tasks:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(t, timeout=10)
        finally:
            await pool.close()

    asyncio.run(go())


@app.command("add-user")
def add_user(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    tenant: Annotated[str, typer.Option(help="tenant name (created if missing)")] = "default",
    role: Annotated[str, typer.Option(help="owner|manager|dispatcher|viewer|installer")] = "owner",
    dsn: DsnOpt = None,
) -> None:
    """Create a user (or reset its password and role)."""
    if role not in directory.ROLES:
        _fail(f"role must be one of {', '.join(directory.ROLES)}")

    async def go() -> None:
        conn = await _connect(_settings(dsn).database_url)
        try:
            tid = await directory.ensure_tenant(conn, tenant)
            await directory.ensure_user(conn, tid, email, password, role)
        except ValueError as e:
            _fail(str(e))
        finally:
            await conn.close()
        typer.echo(f"user {email.lower()} ({role}) in tenant {tenant!r}")

    asyncio.run(go())


@app.command("add-vehicle")
def add_vehicle(
    name: str,
    device: Annotated[str, typer.Option(help="device id installed in it (its MQTT identity)")],
    tenant: str = "default",
    fleet: Annotated[str, typer.Option(help="fleet name (created if missing)")] = "Default",
    dsn: DsnOpt = None,
) -> None:
    """Register a vehicle and its device so ingest accepts the device's data."""

    async def go() -> None:
        conn = await _connect(_settings(dsn).database_url)
        try:
            tid = await directory.ensure_tenant(conn, tenant)
            fid = await directory.ensure_fleet(conn, tid, fleet)
            vid = await directory.ensure_vehicle_with_device(conn, tid, fid, name, device)
        except ValueError as e:
            _fail(str(e))
        finally:
            await conn.close()
        typer.echo(f"vehicle {vid} {name!r} with device {device}")

    asyncio.run(go())


@app.command()
def rollup(dsn: DsnOpt = None) -> None:
    """Bring hourly/daily vehicle statistics up to date now (the service does it each minute)."""
    from fleet_cloud import rollup as stats

    async def go() -> None:
        conn = await _connect(_settings(dsn).database_url)
        try:
            n = await stats.refresh(conn)
        finally:
            await conn.close()
        typer.echo("another process is refreshing" if n is None else f"{n} hourly buckets updated")

    asyncio.run(go())


@app.command()
def retention(
    days: Annotated[
        int | None, typer.Option(help="keep this many days (FLEET_RETENTION_DAYS)")
    ] = None,
    dsn: DsnOpt = None,
) -> None:
    """Delete raw positions and engine samples past the retention (TimescaleDB: set the policy)."""
    from fleet_cloud import retention as policy

    s = _settings(dsn)
    keep = days if days is not None else s.retention_days
    if keep < 1:
        _fail("--days must be at least 1")

    async def go() -> None:
        conn = await _connect(s.database_url)
        try:
            n = await policy.apply(conn, keep)
        finally:
            await conn.close()
        typer.echo(f"retention {keep} days: {n} rows deleted")

    asyncio.run(go())


@app.command("device-token")
def device_token(
    device: str,
    revoke: Annotated[bool, typer.Option(help="revoke every token of the device instead")] = False,
    dsn: DsnOpt = None,
) -> None:
    """Issue an HTTP ingest token for a device (shown once), or revoke its tokens."""
    from fleet_cloud import device_tokens

    async def go() -> None:
        conn = await _connect(_settings(dsn).database_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM devices WHERE device_id = $1", device):
                _fail(f"no device {device!r}: register it first (fleet-cloud add-vehicle)")
            if revoke:
                n = await device_tokens.revoke_all(conn, device)
                typer.echo(f"revoked {n} token(s) of {device}")
            else:
                token = await device_tokens.issue(conn, device)
                typer.echo(token)
                typer.echo(
                    f"(HTTP ingest token for {device}; it is not stored and won't be shown again)",
                    err=True,
                )
        finally:
            await conn.close()

    asyncio.run(go())


@app.command("device-filters")
def device_filters(
    device: str,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="LIMIT=VALUE, e.g. max_speed_kmh=900 (repeatable)"),
    ] = None,
    clear: Annotated[bool, typer.Option(help="back to the global limits")] = False,
    dsn: DsnOpt = None,
) -> None:
    """Show or override a device's plausibility limits."""
    from fleet_cloud.ingest.filters import FilterLimits

    known = set(FilterLimits.__dataclass_fields__)
    overrides: dict[str, float] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            _fail(f"--set takes LIMIT=VALUE with LIMIT one of {', '.join(sorted(known))}")
        try:
            overrides[key] = float(value)
        except ValueError:
            _fail(f"{key}: {value!r} is not a number")

    async def go() -> None:
        conn = await _connect(_settings(dsn).database_url)
        try:
            if clear or overrides:
                cur = await conn.fetchval(
                    "SELECT filter_overrides FROM devices WHERE device_id = $1", device
                )
                new = None if clear else {**(orjson.loads(cur) if cur else {}), **overrides}
                await conn.execute(
                    "UPDATE devices SET filter_overrides = $2::jsonb WHERE device_id = $1",
                    device,
                    orjson.dumps(new).decode() if new else None,
                )
            row = await conn.fetchrow(
                "SELECT filter_overrides FROM devices WHERE device_id = $1", device
            )
        finally:
            await conn.close()
        if row is None:
            _fail(f"no device {device!r}")
        assert row is not None
        current = orjson.loads(row["filter_overrides"]) if row["filter_overrides"] else {}
        typer.echo(f"{device}: {current or 'global limits'} (ingest picks changes up within 30 s)")

    asyncio.run(go())


@app.command("config-keygen")
def config_keygen(
    file: Annotated[
        Path | None,
        typer.Option(help="where to write the key (default: FLEET_CONFIG_SIGNING_KEY_FILE)"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="replace an existing key (devices must be re-provisioned)")
    ] = False,
) -> None:
    """Create the key that signs remote configs (Ed25519 seed, mode 0600); print its public key."""
    from fleet_cloud.remote_config.signing import SigningKeyError, write_new_key

    path = file or _settings().config_signing_key_file
    if path is None:
        _fail("give --file or set FLEET_CONFIG_SIGNING_KEY_FILE")
    assert path is not None
    try:
        public = write_new_key(path, overwrite=force)
    except (SigningKeyError, OSError) as e:
        _fail(str(e))
    typer.echo(f"signing key written to {path} (mode 0600)")
    typer.echo(f"public key (give it to devices as remote.public_key): {public}")


@app.command("seed-demo")
def seed_demo(
    agents: Annotated[int, typer.Option(help="vehicles with a full agent: agent-01..")] = 3,
    sims: Annotated[int, typer.Option(help="lightweight simulated vehicles: sim-0000..")] = 50,
    email: str = "admin@fleet.local",
    password: Annotated[str, typer.Option(help="the demo login's password")] = "fleet-demo",
    dsn: DsnOpt = None,
) -> None:
    """Create the demo tenant, its login and the simulated fleet's vehicles (idempotent)."""

    async def go() -> None:
        conn = await _connect(_settings(dsn).database_url)
        tid = await directory.ensure_tenant(conn, "demo")
        await directory.ensure_user(conn, tid, email, password, "owner")
        fid = await directory.ensure_fleet(conn, tid, "Demo fleet")
        # The trucks run the full agent (remote config, commands); the vans are
        # lightweight sims that speak telemetry only. A sub-fleet of their own
        # gives `fleetctl config push --fleet Trucks` devices that answer.
        trucks = await directory.ensure_fleet(conn, tid, "Trucks")
        await conn.execute("UPDATE fleets SET parent_id = $1 WHERE id = $2", fid, trucks)
        for i in range(1, agents + 1):
            await directory.ensure_vehicle_with_device(
                conn, tid, trucks, f"Truck {i:02d}", f"agent-{i:02d}"
            )
        for i in range(sims):
            await directory.ensure_vehicle_with_device(
                conn, tid, fid, f"Van {i:04d}", f"sim-{i:04d}"
            )
        await conn.close()
        typer.echo(f"demo tenant: {agents} agent vehicles, {sims} simulated vans; login {email}")

    asyncio.run(go())


broker_cli.register(app)  # broker-init, broker-devices (docs/security.md)


def main() -> None:
    app()
