"""``fleetctl config`` (staged rollouts, desired vs reported) and ``fleetctl command``
(commands to one device). docs/remote-config.md."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet_cloud.ctl import _fail, _request, console
from fleet_cloud.remote_config.validation import parse_cli_value

app: typer.Typer = typer.Typer(
    help="Remote configuration: staged rollouts to a fleet, each device's config.",
    no_args_is_help=True,
    add_completion=False,
)
command_app: typer.Typer = typer.Typer(
    help="Commands to one device: locate, set_interval, restart, clear_outbox.",
    no_args_is_help=True,
    add_completion=False,
)

FINISHED = ("done", "aborted")
POLL_S = 1.0


def parse_percent(text: str, option: str) -> float:
    """'10%' or '10' -> 10.0."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        _fail(f"{option} {text!r}: expected a percentage such as 10%")
        raise AssertionError from None
    if not 0 <= value <= 100:
        _fail(f"{option} {text!r}: must be between 0% and 100%")
    return value


def parse_pairs(items: list[str] | None, option: str) -> dict[str, Any]:
    """Repeated ``key=value`` options; values are JSON when they parse (5, true, ["rpm"])."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"{option} {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_cli_value(value)
    return out


def _fleet_ref(fleet: str) -> dict[str, Any]:
    return {"fleet_id": int(fleet)} if fleet.isdigit() else {"fleet_name": fleet}


def _print_rollout(r: dict[str, Any], members: bool = True) -> None:
    console.print(
        f"rollout {r['id']} on fleet {r['fleet_id']}: [bold]{r['state']}[/bold]"
        + (f" ({r['reason']})" if r.get("reason") else "")
    )
    console.print(
        f"  change {r['changes']}; canary {r['canary_percent']:g}% "
        f"({r['canary_count']} of {r['devices_total']} devices), abort above "
        f"{r['max_failures_percent']:g}% failures, wait {r['wait_s']} s"
    )
    console.print(
        f"  applied {r['applied_count']}, failed {r['failed_count']}, "
        f"waiting for {r['pending_count']}"
    )
    if members and r["members"]:
        table = Table("device", "phase", "version", "result", "reason")
        for m in r["members"]:
            table.add_row(
                m["device_id"],
                m["phase"],
                str(m["version"] or "-"),
                m["result"] or ("waiting" if m["version"] else "-"),
                m["reason"] or "",
            )
        console.print(table)


@app.command()
def push(
    fleet: Annotated[str, typer.Option(help="fleet id or name")],
    set_: Annotated[
        list[str],
        typer.Option("--set", help="KEY=VALUE, e.g. sampler.min_interval_s=5 (repeatable)"),
    ],
    canary: Annotated[str, typer.Option(help="fraction of the fleet changed first")] = "10%",
    max_failures: Annotated[
        str, typer.Option(help="abort when more canaries than this fail")
    ] = "20%",
    wait: Annotated[int, typer.Option(help="seconds to wait for each phase's reports")] = 300,
    follow: Annotated[
        bool, typer.Option(help="watch the rollout until it is done or aborted")
    ] = False,
) -> None:
    """Stage a config change: canaries first, then the rest of the fleet, or abort."""
    body = {
        **_fleet_ref(fleet),
        "set": parse_pairs(set_, "--set"),
        "canary_percent": parse_percent(canary, "--canary"),
        "max_failures_percent": parse_percent(max_failures, "--max-failures"),
        "wait_s": wait,
    }
    r = _request("POST", "/api/v1/config/rollouts", json=body)
    _print_rollout(r, members=False)
    if follow:
        _follow(r)


def _follow(r: dict[str, Any]) -> None:
    state = r["state"]
    while r["state"] not in FINISHED:
        time.sleep(POLL_S)
        r = _request("GET", f"/api/v1/config/rollouts/{r['id']}")
        if r["state"] != state:
            state = r["state"]
            console.print(f"rollout {r['id']}: {state}")
    _print_rollout(r)
    if r["state"] == "aborted":
        raise typer.Exit(1)


@app.command()
def status(rollout: Annotated[int, typer.Argument(help="rollout id")]) -> None:
    """A rollout's state and every device's result."""
    _print_rollout(_request("GET", f"/api/v1/config/rollouts/{rollout}"))


@app.command()
def abort(rollout: Annotated[int, typer.Argument(help="rollout id")]) -> None:
    """Stop a running rollout; devices that got the change get their previous config back."""
    _print_rollout(_request("POST", f"/api/v1/config/rollouts/{rollout}/abort"))


@app.command()
def show(device: Annotated[str, typer.Argument(help="device id")]) -> None:
    """A device's desired config (what the cloud signed) and what it reported."""
    c = _request("GET", f"/api/v1/devices/{device}/config")
    d, rep = c["desired"], c["reported"]
    if d is None:
        console.print(f"{device}: no remote config (its provisioned file rules)")
    else:
        pub = "published" if d["published"] else "not yet on the broker"
        console.print(f"{device}: desired version {d['version']} ({pub})")
        for k, v in sorted(d["config"].items()):
            console.print(f"  {k} = {v}")
    if rep is None:
        console.print("  no report from the device yet")
    else:
        why = f": {rep['reason']}" if rep["reason"] else ""
        console.print(
            f"  reported: version {rep['version']} {rep['status']}{why}; "
            f"running version {rep['active_version']}"
        )
    console.print("  in sync" if c["in_sync"] else "  [yellow]not in sync[/yellow]")


@command_app.command("send")
def send(
    device: Annotated[str, typer.Argument(help="device id")],
    kind: Annotated[str, typer.Argument(help="locate | set_interval | restart | clear_outbox")],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", help="KEY=VALUE argument, e.g. min_interval_s=5 (repeatable)"),
    ] = None,
    confirm: Annotated[
        bool, typer.Option(help="required for clear_outbox (drops unsent data)")
    ] = False,
    expires: Annotated[int, typer.Option(help="seconds before the command expires")] = 300,
    wait: Annotated[
        float, typer.Option(help="wait this many seconds for the device's answer (0: don't)")
    ] = 30.0,
) -> None:
    """Send a command to a device and (by default) wait for its answer."""
    body = {
        "kind": kind,
        "args": parse_pairs(arg, "--arg"),
        "expires_in_s": expires,
        "confirm": confirm,
    }
    c = _request("POST", f"/api/v1/devices/{device}/commands", json=body)
    console.print(f"command {c['id']} ({kind}) to {device}: {c['status']}")
    deadline = time.monotonic() + wait
    while c["status"] in ("pending", "sent") and time.monotonic() < deadline:
        time.sleep(POLL_S)
        c = _request("GET", f"/api/v1/devices/{device}/commands/{c['id']}")
    _print_command(c)
    if c["status"] in ("rejected", "failed", "expired"):
        raise typer.Exit(1)


@command_app.command("show")
def show_command(
    device: Annotated[str, typer.Argument(help="device id")],
    command: Annotated[str, typer.Argument(help="command id")],
) -> None:
    """A command's status, message and result."""
    _print_command(_request("GET", f"/api/v1/devices/{device}/commands/{command}"))


def _print_command(c: dict[str, Any]) -> None:
    console.print(f"{c['kind']} {c['id']}: [bold]{c['status']}[/bold] {c['message'] or ''}")
    if c["result"]:
        for k, v in sorted(c["result"].items()):
            console.print(f"  {k} = {v}")
