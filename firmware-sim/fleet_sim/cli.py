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
    route_start: Annotated[
        int | None,
        typer.Option(
            metavar="UTC_MS",
            help="Fix time of the route's first epoch (default: now). Give `fleet-sim elm327` "
            "the same seed, --hz and --route-start to drive the same route.",
        ),
    ] = None,
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
        route_start_ms=route_start,
    )
    try:
        run_gps(opts)
    except OSError as e:
        raise _fail(e.strerror or str(e)) from None


def _password_map(path: Path) -> dict[str, str]:
    import json

    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise _fail(f"--password-file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise _fail(f"--password-file {path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
    ):
        raise _fail(f"--password-file {path}: expected a JSON object of device id -> password")
    return doc


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
    password_file: Annotated[
        Path | None,
        typer.Option(
            help='JSON object {"DEVICE_ID": "PASSWORD", ...}: each vehicle logs in with its '
            "own broker account (fleet-cloud broker-devices writes such a file)."
        ),
    ] = None,
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
        passwords=_password_map(password_file) if password_file else {},
    )
    try:
        asyncio.run(run_fleet(opts))
    except OSError as e:
        raise _fail(e.strerror or str(e)) from None
    except ValueError as e:
        raise _fail(str(e)) from None


@app.command()
def check(
    dsn: Annotated[str, typer.Option(help="PostgreSQL DSN of the cloud database.")],
    oracle: Annotated[
        list[Path], typer.Option(help="Oracle log(s) written by fleet-sim (repeatable).")
    ],
    device: Annotated[
        str | None,
        typer.Option(help="Device id of the agent that read the gps oracle's receiver."),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(help="That agent's outbox: expect exactly what it committed."),
    ] = None,
    until: Annotated[
        int | None,
        typer.Option(
            metavar="UTC_MS",
            help="Expect fleet fixes only up to this fix time (vehicles stopped later "
            "take their unacked fixes with them).",
        ),
    ] = None,
    json_line: Annotated[
        bool, typer.Option("--json", help="Also print the report as one JSON line.")
    ] = False,
) -> None:
    """Compare oracle logs with the database: missing, duplicated, out of order, latency.

    Exits 1 on any loss or duplicate (or a stored fix the oracle does not
    know, or a drop count that does not match what is missing), 2 on bad input.
    """
    from fleet_sim.check import CheckError, format_report, report_json, run_check

    try:
        report = run_check(dsn, oracle, device, outbox, until)
    except CheckError as e:
        typer.echo(f"fleet-sim: error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(report))
    if json_line:
        typer.echo(report_json(report))
    raise typer.Exit(0 if report.ok else 1)


def _dtc(values: list[str]) -> list[str]:
    from fleet_sim.elm327 import valid_dtc

    for v in values:
        if not valid_dtc(v):
            raise typer.BadParameter(f"{v!r} is not a trouble code like P0133, C0300, B1234, U0100")
    return values


def _vin(value: str) -> str:
    if len(value) != 17 or not value.isalnum() or set(value.upper()) & set("IOQ"):
        raise typer.BadParameter("a VIN is 17 letters and digits, without I, O or Q")
    return value.upper()


@app.command()
def elm327(
    pty: Annotated[
        bool, typer.Option("--pty", help="Emulate the adapter on a new pseudo-terminal.")
    ] = False,
    link: Annotated[
        Path | None,
        typer.Option(help="Also make this symlink point at the pty (replaced if it exists)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Route seed: use the GPS simulator's.")] = 1,
    hz: Annotated[int, typer.Option(min=1, max=10, help="The GPS simulator's --hz.")] = 1,
    route_start: Annotated[
        int | None,
        typer.Option(metavar="UTC_MS", help="The GPS simulator's --route-start (default: now)."),
    ] = None,
    clone: Annotated[
        bool,
        typer.Option(
            "--clone",
            help="Quirky clone: echo stuck on, slow replies, ATAT unknown, one PID per request.",
        ),
    ] = False,
    vin: Annotated[str, typer.Option(callback=_vin, help="Vehicle identification number.")] = (
        "WVWZZZ1KZ8W123456"
    ),
    dtc: Annotated[
        list[str], typer.Option(callback=_dtc, help="Stored trouble code (repeatable), e.g. P0133.")
    ] = [],  # noqa: B006 - typer needs a list default
    pending_dtc: Annotated[
        list[str], typer.Option(callback=_dtc, help="Pending trouble code (repeatable).")
    ] = [],  # noqa: B006
    ignition_off: Annotated[
        bool, typer.Option("--ignition-off", help="Start with the ignition off (ECU silent).")
    ] = False,
) -> None:
    """Emulate an ELM327 OBD-II adapter with a vehicle behind it (ISO 15765-4 CAN).

    Prints the pty path as the first line of stdout. The vehicle drives the
    route of `fleet-sim gps` with the same --seed, --hz and --route-start:
    speed, RPM through the gearbox, coolant warming up, fuel, voltage. The
    ignition goes off when the vehicle parks; SIGUSR1 forces it off and back.
    Runs until SIGTERM or Ctrl-C, then removes --link.
    """
    from fleet_sim.elm327_pty import ElmOptions, run_elm327

    if not pty:
        raise typer.BadParameter(
            "is required: a pseudo-terminal is the only output", param_hint="'--pty'"
        )
    opts = ElmOptions(
        seed=seed,
        hz=hz,
        route_start_ms=route_start,
        link=link,
        clone=clone,
        vin=vin,
        dtcs=tuple(dtc),
        pending=tuple(pending_dtc),
        ignition_off=ignition_off,
    )
    try:
        run_elm327(opts)
    except OSError as e:
        raise _fail(e.strerror or str(e)) from None


@app.command("nmea-log")
def nmea_log(
    out: Annotated[Path, typer.Option(help="File to write (replaced).")],
    seconds: Annotated[float, typer.Option(min=1, help="Length of the drive.")] = 60,
    hz: Annotated[int, typer.Option(min=1, max=10, help="Epochs per second.")] = 1,
    seed: Annotated[int, typer.Option(help="Route seed, as for `fleet-sim gps`.")] = 1,
    route_start: Annotated[
        int | None,
        typer.Option(metavar="UTC_MS", help="Fix time of the first epoch (default: now)."),
    ] = None,
    talker: Annotated[str, typer.Option(callback=_talker, help="Talker id.")] = "GP",
    no_fix: Annotated[
        bool, typer.Option("--no-fix", help="A receiver that never gets a fix.")
    ] = False,
    bad_checksum_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    garbage_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
) -> None:
    """Write the NMEA `fleet-sim gps` would send to a file: a log for gpsfake (gpsd-clients).

    Example: fleet-sim nmea-log --out drive.nmea --seconds 120 && gpsfake -1 -P 2950 drive.nmea
    """
    from fleet_sim.nmea_log import write_nmea_log

    try:
        n = write_nmea_log(
            out, seconds, seed=seed, hz=hz, talker=talker, route_start_ms=route_start,
            no_fix=no_fix, bad_checksum_rate=bad_checksum_rate, garbage_rate=garbage_rate,
        )  # fmt: skip
    except OSError as e:
        raise _fail(f"{out}: {e.strerror or e}") from None
    typer.echo(f"{out}: {n} epochs")


def main() -> None:
    app()
