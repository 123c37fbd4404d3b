"""``fleet-agent``: run the agent, or inspect its outbox."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet_edge.config import ConfigError, load_config, parse_host_port
from fleet_edge.outbox import OutboxError, OutboxStats, read_stats

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="In-vehicle agent of the fleet telemetry platform.",
)
log = logging.getLogger("fleet_edge")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"fleet-agent: {message}", err=True)
    return typer.Exit(code)


# Options shared by the commands that read the agent's config.
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
DeviceIdOpt = Annotated[str | None, typer.Option(help="Override device_id.")]
BrokerOpt = Annotated[
    str | None, typer.Option(metavar="HOST:PORT", help="Override broker host and port.")
]
OutboxOpt = Annotated[Path | None, typer.Option(help="Override the outbox file.")]


@app.command()
def run(
    config: ConfigOpt = None,
    device_id: DeviceIdOpt = None,
    broker: BrokerOpt = None,
    gps_serial: Annotated[
        Path | None, typer.Option(help="Override the GPS serial port (gps.port).")
    ] = None,
    outbox: OutboxOpt = None,
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning, error (default: log_level of the config)."),
    ] = None,
) -> None:
    """Run the agent until SIGTERM/SIGINT. A missing GPS port or broker is waited for."""
    from fleet_edge.agent import run_agent
    from fleet_edge.logs import setup_logging

    overrides: dict[str, Any] = {
        "device_id": device_id,
        "gps.port": gps_serial,
        "outbox.path": outbox,
    }
    if log_level is not None:
        if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise _fail(f"--log-level {log_level!r}: expected debug, info, warning or error")
        overrides["log_level"] = log_level.lower()
    try:
        if broker is not None:
            overrides["broker.host"], overrides["broker.port"] = parse_host_port(broker)
        cfg = load_config(config, overrides)
    except ConfigError as e:
        raise _fail(str(e)) from None
    setup_logging(cfg.log_level)
    try:
        asyncio.run(run_agent(cfg))
    except OutboxError as e:
        raise _fail(str(e)) from None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def format_stats(path: Path, st: OutboxStats) -> str:
    if st.oldest_ms is None:
        oldest = "-"
    else:
        when = datetime.fromtimestamp(st.oldest_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        oldest = f"{when} ({_age(max(0.0, time.time() - st.oldest_ms / 1000))} ago)"
    rows = [
        ("outbox", str(path)),
        ("depth", f"{st.depth} fixes ({_size(st.bytes)})"),
        ("oldest", oldest),
        ("dropped", str(st.dropped)),
        ("last seq", str(st.last_seq)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@app.command()
def status(
    outbox: Annotated[Path | None, typer.Option(help="Outbox file to inspect.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Take the outbox path from this config.")
    ] = None,
) -> None:
    """Show the outbox (read-only, safe while the agent runs)."""
    try:
        if outbox is None:
            if config is None:
                raise _fail("give --outbox PATH or --config FILE")
            doc = load_config(config)
            outbox = doc.outbox.path
        st = read_stats(outbox)
    except (ConfigError, OutboxError) as e:
        raise _fail(str(e)) from None
    typer.echo(format_stats(outbox, st))


@app.command()
def doctor(
    config: ConfigOpt = None,
    device_id: DeviceIdOpt = None,
    broker: BrokerOpt = None,
    gps_serial: Annotated[
        Path | None, typer.Option(help="Check this GPS serial port (gps.source = serial).")
    ] = None,
    gpsd: Annotated[
        str | None, typer.Option(metavar="HOST:PORT", help="Check GPS through this gpsd instead.")
    ] = None,
    obd_serial: Annotated[
        Path | None, typer.Option(help="Check this ELM327 port (enables the OBD checks).")
    ] = None,
    outbox: OutboxOpt = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for a GPS fix and an ECU.")
    ] = 30.0,
) -> None:
    """Check GPS fix, OBD link, broker round trip, clock and disk; exit 1 if any check fails."""
    from fleet_edge.doctor import format_report, run_doctor

    overrides: dict[str, Any] = {
        "device_id": device_id,
        "gps.port": gps_serial,
        "obd.port": obd_serial,
        "obd.enabled": True if obd_serial is not None else None,
        "outbox.path": outbox,
    }
    try:
        if broker is not None:
            overrides["broker.host"], overrides["broker.port"] = parse_host_port(broker)
        if gpsd is not None:
            overrides["gps.source"] = "gpsd"
            try:
                overrides["gps.gpsd_host"], overrides["gps.gpsd_port"] = parse_host_port(gpsd)
            except ConfigError:
                raise _fail(f"--gpsd {gpsd!r}: expected HOST:PORT") from None
        cfg = load_config(config, overrides)
    except ConfigError as e:
        raise _fail(str(e)) from None
    logging.basicConfig(level=logging.CRITICAL)  # the report says it all; no log noise
    checks = asyncio.run(run_doctor(cfg, timeout))
    typer.echo(format_report(cfg.device_id, checks))
    if any(c.result == "FAIL" for c in checks):
        raise typer.Exit(1)


@app.command()
def provision(
    cloud: Annotated[
        str, typer.Option(help="The fleet cloud's URL, e.g. https://fleet.example.com")
    ],
    token: Annotated[
        str, typer.Option(envvar="FLEET_CLAIM_TOKEN", help="Claim token (`fleetctl claim create`).")
    ],
    config_dir: Annotated[Path, typer.Option(help="Where config.toml and ca.pem go.")] = Path(
        "/etc/fleet-agent"
    ),
    state_dir: Annotated[
        Path, typer.Option(help="Outbox, install id and remote-config state.")
    ] = Path("/var/lib/fleet-agent"),
    user: Annotated[str, typer.Option(help="The agent's system user (owns the files).")] = (
        "fleet-agent"
    ),
    unit_dir: Annotated[Path, typer.Option(help="Where the systemd unit goes.")] = Path(
        "/etc/systemd/system"
    ),
    no_systemd: Annotated[
        bool, typer.Option("--no-systemd", help="Do not install or start the systemd unit.")
    ] = False,
    gps_port: Annotated[Path | None, typer.Option(help="GPS receiver's serial port.")] = None,
    obd_port: Annotated[
        Path | None, typer.Option(help="ELM327 adapter's serial port (enables OBD).")
    ] = None,
    cloud_ca: Annotated[
        Path | None, typer.Option(help="CA file for a cloud URL with a private certificate.")
    ] = None,
    doctor_timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds the doctor waits for a GPS fix and an ECU.")
    ] = 30.0,
) -> None:
    """Commission this unit: redeem a claim token, write its config and credentials (0600),
    install and start the systemd unit, then run the doctor. Safe to re-run."""
    from fleet_edge.doctor import format_report, run_doctor
    from fleet_edge.provision import ProvisionError, Request, load_written
    from fleet_edge.provision import provision as run_provision

    req = Request(
        cloud=cloud,
        token=token,
        config_dir=config_dir,
        state_dir=state_dir,
        user=user,
        unit_dir=unit_dir,
        systemd=not no_systemd,
        gps_port=gps_port,
        obd_port=obd_port,
        cloud_ca=cloud_ca,
    )
    try:
        path = run_provision(req, typer.echo)
        cfg = load_written(path)
    except ProvisionError as e:
        raise _fail(str(e), 1) from None
    logging.basicConfig(level=logging.CRITICAL)  # the report says it all
    typer.echo("")
    checks = asyncio.run(run_doctor(cfg, doctor_timeout))
    typer.echo(format_report(cfg.device_id, checks))
    if any(c.result == "FAIL" for c in checks):
        raise _fail("provisioned, but the doctor found problems (above); fix them and re-run", 1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
