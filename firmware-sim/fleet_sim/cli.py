"""``fleet-sim``: simulated hardware and vehicles for development, tests and benchmarks."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from fleet_wire import is_valid_device_id

app = typer.Typer(
    name="fleet-sim",
    help="Simulated GNSS receivers and vehicle fleets for the fleet telemetry platform.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

TALKER_RE = re.compile(r"^[A-Z]{2}$")


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # paho logs every packet at debug level; that is noise even with -v.
    logging.getLogger("mqtt").setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"fleet-sim: error: {message}", err=True)
    return typer.Exit(1)


def _talker(value: str) -> str:
    if not TALKER_RE.fullmatch(value):
        raise typer.BadParameter("must be two upper-case letters, e.g. GP (GPS) or GN (multi-GNSS)")
    return value


def _split_broker(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:1883")
    return host.strip("[]"), int(port)


def _broker(value: str) -> str:
    _split_broker(value)
    return value


def _prefix(value: str) -> str:
    if not is_valid_device_id(f"{value}-0000"):
        raise typer.BadParameter(
            f"{value!r} would give invalid device ids: use lower-case letters, digits and '-', "
            "starting with a letter or digit"
        )
    return value


@app.command()
def gps(
    pty: Annotated[
        bool,
        typer.Option(
            "--pty",
            help="Emulate the receiver on a new pseudo-terminal (required: the only output).",
        ),
    ] = False,
    link: Annotated[
        Path | None,
        typer.Option(help="Also make this symlink point at the pty (replaced if it exists)."),
    ] = None,
    hz: Annotated[int, typer.Option(min=1, max=10, help="Epochs (fixes) per second.")] = 1,
    seed: Annotated[
        int, typer.Option(help="Route, noise and fault seed: same seed, same drive.")
    ] = 1,
    bad_checksum_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Chance per sentence that its checksum is wrong."),
    ] = 0.0,
    garbage_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Chance per sentence of a junk line before it (random or NUL bytes, "
            "a truncated or checksum-less copy).",
        ),
    ] = 0.0,
    no_fix: Annotated[
        bool, typer.Option("--no-fix", help="Never get a fix (a receiver indoors): RMC V, GGA 0.")
    ] = False,
    oracle: Annotated[
        Path | None,
        typer.Option(help="Append one JSON line per epoch with a fix written to the port."),
    ] = None,
    talker: Annotated[
        str,
        typer.Option(callback=_talker, help="Talker id: GP (GPS), GN (GPS+GLONASS), GL, GA..."),
    ] = "GP",
) -> None:
    """Emulate a serial NMEA 0183 GNSS receiver driving around Berlin.

    Prints the pty path (e.g. /dev/pts/7) as the first line of stdout, then
    writes RMC, VTG, GGA, GSA (and GSV, ZDA once a second) every 1/hz seconds
    with the current UTC time as fix time. Runs until SIGTERM or Ctrl-C, then
    removes --link.
    """
    from fleet_sim.gps_pty import GpsOptions, run_gps

    if not pty:
        raise typer.BadParameter(
            "is required: a pseudo-terminal is the only output so far", param_hint="'--pty'"
        )
    opts = GpsOptions(
        hz=hz,
        seed=seed,
        talker=talker,
        link=link,
        bad_checksum_rate=bad_checksum_rate,
        garbage_rate=garbage_rate,
        no_fix=no_fix,
        oracle=oracle,
    )
    try:
        run_gps(opts)
    except OSError as e:
        raise _fail(e.strerror or str(e)) from None


@app.command()
def fleet(
    count: Annotated[
        int, typer.Option(min=1, max=100_000, help="Number of vehicles in this process.")
    ] = 50,
    prefix: Annotated[
        str, typer.Option(callback=_prefix, help="Device ids are PREFIX-0000, PREFIX-0001...")
    ] = "sim",
    first: Annotated[
        int,
        typer.Option(min=0, help="Index of the first vehicle, to split a fleet across processes."),
    ] = 0,
    broker: Annotated[
        str,
        typer.Option(callback=_broker, metavar="HOST:PORT", help="MQTT broker to connect to."),
    ] = "127.0.0.1:1883",
    hz: Annotated[
        float, typer.Option(min=0.01, max=10.0, help="Fixes per second per vehicle.")
    ] = 1.0,
    batch_seconds: Annotated[
        float, typer.Option(min=0.05, max=3600.0, help="Seconds between telemetry batches.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Base seed of the vehicles' routes.")] = 1,
    oracle: Annotated[
        Path | None,
        typer.Option(help="Append one JSON line per fix recorded (and per fix dropped unacked)."),
    ] = None,
    resend_seconds: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Send a fix again when no cloud ack covers it within this; each further "
            "resend of it waits twice as long (at most 16x).",
        ),
    ] = 10.0,
    max_unacked: Annotated[
        int,
        typer.Option(
            min=1,
            help="Unacked fixes each vehicle keeps in memory; beyond this the oldest are "
            "dropped (and logged to the oracle).",
        ),
    ] = 600,
    status_seconds: Annotated[
        float, typer.Option(min=1.0, help="Seconds between retained status updates.")
    ] = 60.0,
    session_expiry: Annotated[
        int,
        typer.Option(min=0, help="MQTT session expiry (s): how long the broker keeps acks for us."),
    ] = 86_400,
) -> None:
    """Simulate a fleet of vehicles speaking wire protocol v1 directly over MQTT.

    Each vehicle is its own MQTT v5 client (client id = device id) with a
    persistent session, a retained status and Last Will on up/status, and a
    telemetry batch at QoS 1 every --batch-seconds. Fixes not acked end to end
    on down/ack within --resend-seconds are sent again. Runs until SIGTERM or
    Ctrl-C.
    """
    from fleet_sim.fleet import FleetOptions, run_fleet

    host, port = _split_broker(broker)
    opts = FleetOptions(
        count=count,
        first=first,
        prefix=prefix,
        host=host,
        port=port,
        hz=hz,
        batch_seconds=batch_seconds,
        seed=seed,
        oracle=oracle,
        resend_seconds=resend_seconds,
        max_unacked=max_unacked,
        status_seconds=status_seconds,
        session_expiry=session_expiry,
    )
    try:
        asyncio.run(run_fleet(opts))
    except OSError as e:
        raise _fail(e.strerror or str(e)) from None


def main() -> None:
    app()
