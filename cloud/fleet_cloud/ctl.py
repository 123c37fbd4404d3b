"""``fleetctl``: the fleet manager's command line, a client of the REST API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help=(
        "Fleet manager's CLI: log in to a fleet cloud; vehicles, claim tokens,"
        " remote config rollouts and device commands."
    ),
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

CRED_FILE = Path(
    os.environ.get("FLEETCTL_CONFIG", Path.home() / ".config" / "fleetctl" / "auth.json")
)


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


def _load_auth() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(CRED_FILE.read_text())
        return data
    except FileNotFoundError:
        _fail("not logged in: run `fleetctl login --api URL --email EMAIL` first")
    except json.JSONDecodeError:
        _fail(f"{CRED_FILE} is corrupt: log in again")
    raise AssertionError


def _request(method: str, path: str, **kw: Any) -> Any:
    auth = _load_auth()
    try:
        r = httpx.request(
            method,
            auth["api"].rstrip("/") + path,
            headers={"authorization": f"Bearer {auth['token']}"},
            timeout=15,
            **kw,
        )
    except httpx.HTTPError as e:
        _fail(f"cannot reach {auth['api']}: {e}")
    if r.status_code == 401:
        _fail("session expired or invalid: run `fleetctl login` again")
    if r.status_code >= 400:
        _fail(r.json().get("error", {}).get("message", r.text))
    return r.json() if r.content else None  # 204: nothing


@app.command()
def login(
    api: Annotated[str, typer.Option(help="cloud base URL, e.g. http://127.0.0.1:8080")],
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
) -> None:
    """Log in and keep the token in ~/.config/fleetctl/auth.json (mode 0600)."""
    try:
        r = httpx.post(
            api.rstrip("/") + "/api/v1/auth/login",
            json={"email": email, "password": password},
            timeout=15,
        )
    except httpx.HTTPError as e:
        _fail(f"cannot reach {api}: {e}")
    if r.status_code != 200:
        _fail(r.json().get("error", {}).get("message", f"login failed ({r.status_code})"))
    doc = r.json()
    CRED_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(CRED_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"api": api, "token": doc["access_token"]}, f)
    user = doc["user"]
    console.print(
        f"logged in as {user['email']} ({user['role']}); token valid {doc['expires_in']} s"
    )


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = max(0, int(time.time() - ms / 1000))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


@app.command()
def vehicles(
    search: Annotated[str | None, typer.Argument(help="filter by name or device id")] = None,
) -> None:
    """List vehicles with their latest position and status."""
    rows = _request("GET", "/api/v1/vehicles")
    if search:
        needle = search.lower()
        rows = [v for v in rows if needle in v["name"].lower() or needle in (v["device_id"] or "")]
    table = Table("id", "name", "device", "status", "speed km/h", "position", "last fix")
    for v in rows:
        st = v["state"] or {}
        online = st.get("online")
        status = "no data" if not st else "offline" if online is False else "online"
        pos = f"{st['lat']:.5f}, {st['lon']:.5f}" if st.get("lat") is not None else "-"
        spd = f"{st['spd']:.0f}" if st.get("spd") is not None else "-"
        table.add_row(
            str(v["id"]), v["name"], v["device_id"] or "-", status, spd, pos, _age(st.get("t"))
        )
    console.print(table if rows else "no vehicles")


from fleet_cloud import ctl_claims  # noqa: E402  (its commands use the helpers above)

app.add_typer(ctl_claims.app, name="claim")

from fleet_cloud import ctl_config  # noqa: E402

app.add_typer(ctl_config.app, name="config")
app.add_typer(ctl_config.command_app, name="command")


def main() -> None:
    app()
