"""``fleetctl claim``: one-time claim tokens that commission a unit (docs/provisioning.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet_cloud.ctl import _fail, _load_auth, _request, console

app: typer.Typer = typer.Typer(
    help="Claim tokens: `fleet-agent provision --token` redeems one on the unit.",
    no_args_is_help=True,
    add_completion=False,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """'90s', '30m', '2h', '1d' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if m is None:
        _fail(f"--ttl {text!r}: expected a duration such as 30m, 2h or 1d")
        raise AssertionError
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def resolve_vehicle(name_or_id: str) -> dict[str, Any]:
    """The one vehicle whose id, name (any case) or device id this is."""
    vehicles: list[dict[str, Any]] = _request("GET", "/api/v1/vehicles")
    key = name_or_id.strip().lower()
    hits = [v for v in vehicles if name_or_id.strip() == str(v["id"])]
    hits = hits or [v for v in vehicles if v["name"].lower() == key]
    hits = hits or [v for v in vehicles if (v.get("device_id") or "") == key]
    if not hits:
        _fail(f"no vehicle {name_or_id!r} (see `fleetctl vehicles`)")
    if len(hits) > 1:
        _fail(f"{name_or_id!r} names {len(hits)} vehicles: give the id")
    return hits[0]


def _when(iso: str | None) -> str:
    if iso is None:
        return "-"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.command()
def create(
    vehicle: Annotated[str, typer.Option(help="vehicle name, id or device id")],
    ttl: Annotated[str, typer.Option(help="how long the token works: 30m, 2h, 1d (5m..7d)")] = "2h",
    device_id: Annotated[
        str | None,
        typer.Option(help="device id to issue (default: the vehicle's, or from its name)"),
    ] = None,
) -> None:
    """Create a one-time claim token for a vehicle and print the installer's command."""
    v = resolve_vehicle(vehicle)
    body: dict[str, Any] = {"ttl_s": parse_ttl(ttl)}
    if device_id is not None:
        body["device_id"] = device_id
    claim = _request("POST", f"/api/v1/vehicles/{v['id']}/claims", json=body)
    api = _load_auth()["api"].rstrip("/")
    device = claim["device_id"] or v.get("device_id") or "(derived from the vehicle's name)"
    typer.echo(f"claim {claim['id']} for vehicle {v['id']} {v['name']!r}, device {device}")
    typer.echo(f"expires {_when(claim['expires_at'])}; works once; not shown again")
    typer.echo(f"token: {claim['token']}")
    typer.echo(f"on the unit: sudo fleet-agent provision --cloud {api} --token {claim['token']}")


@app.command("list")
def list_(
    vehicle: Annotated[str | None, typer.Option(help="only this vehicle's claims")] = None,
    status: Annotated[str | None, typer.Option(help="pending, used, expired or revoked")] = None,
) -> None:
    """List claims (never their tokens), newest first."""
    if status is not None and status not in ("pending", "used", "expired", "revoked"):
        _fail("--status must be pending, used, expired or revoked")
    if vehicle is not None:
        rows = _request("GET", f"/api/v1/vehicles/{resolve_vehicle(vehicle)['id']}/claims")
        rows = [r for r in rows if status is None or r["status"] == status]
    else:
        rows = _request("GET", "/api/v1/claims", params={"status": status} if status else None)
    table = Table("id", "vehicle", "device", "status", "expires", "used", "by unit", "created by")
    for r in rows:
        unit = " ".join(x for x in (r["used_hostname"], r["used_by"]) if x) or "-"
        table.add_row(
            str(r["id"]), str(r["vehicle_id"]), r["device_id"] or "-", r["status"],
            _when(r["expires_at"]), _when(r["used_at"]), unit, r["created_by"] or "-",
        )  # fmt: skip
    console.print(table if rows else "no claims")


@app.command()
def revoke(
    claim_id: int,
    vehicle: Annotated[str, typer.Option(help="vehicle name, id or device id of the claim")],
) -> None:
    """Revoke an unused claim: its token stops working at once."""
    v = resolve_vehicle(vehicle)
    _request("DELETE", f"/api/v1/vehicles/{v['id']}/claims/{claim_id}")
    typer.echo(f"claim {claim_id} revoked")
