"""``fleet-cloud broker-init`` and ``fleet-cloud broker-devices``: broker accounts from the shell.

broker-init creates the cloud's roles and service accounts (ingest, control)
from the FLEET_MQTT_* settings, over MQTT as the dynsec admin; run it once
after the broker's first start and whenever a service password changes.
broker-devices creates device accounts in bulk (``make up``'s simulated
fleet); real devices get theirs at provisioning.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from fleet_cloud.broker_acl import BadDeviceId, checked_device_id
from fleet_cloud.broker_admin import BrokerAdmin, BrokerAdminError
from fleet_cloud.settings import Settings


def _fail(msg: str) -> typer.Exit:
    typer.secho(f"error: {msg}", fg="red", err=True)
    return typer.Exit(1)


def broker_init() -> None:
    """Create or update the cloud's broker roles and accounts (FLEET_MQTT_*)."""
    s = Settings()
    ingest = (s.mqtt_username, s.mqtt_password) if s.mqtt_username and s.mqtt_password else None
    control = (
        (s.mqtt_control_username, s.mqtt_control_password) if s.mqtt_control_password else None
    )

    async def go() -> None:
        async with BrokerAdmin.from_settings(s) as admin:
            await admin.ensure_service_accounts(ingest, control)

    try:
        asyncio.run(go())
    except BrokerAdminError as e:
        raise _fail(str(e)) from None
    for what, acct, env in (
        ("ingest", ingest, "FLEET_MQTT_USERNAME/FLEET_MQTT_PASSWORD"),
        ("control", control, "FLEET_MQTT_CONTROL_PASSWORD"),
    ):
        if acct:
            typer.echo(f"{what} account {acct[0]}: ready")
        else:
            typer.echo(f"{what} account: skipped ({env} not set)")


def broker_devices(
    device_ids: Annotated[list[str], typer.Argument(help="device ids", show_default=False)],
    password_file: Annotated[
        Path,
        typer.Option(
            help="JSON object device id -> password; existing entries are reused, new ones"
            " added (written with mode 0600)"
        ),
    ],
) -> None:
    """Create (or re-enable with the same password) broker accounts for these devices."""
    try:
        ids = [checked_device_id(d) for d in device_ids]
    except BadDeviceId as e:
        raise _fail(str(e)) from None
    known: dict[str, str] = {}
    if password_file.exists():
        try:
            known = json.loads(password_file.read_text())
        except (OSError, ValueError) as e:
            raise _fail(f"{password_file}: {e}") from None
        if not isinstance(known, dict):
            raise _fail(f"{password_file}: expected a JSON object of device id -> password")
    for d in ids:
        known.setdefault(d, secrets.token_urlsafe(18))

    async def go() -> None:
        async with BrokerAdmin.from_settings(Settings()) as admin:
            for d in ids:
                await admin.ensure_device(d, known[d])

    # Written before the broker learns the passwords, so none is ever lost.
    tmp = password_file.with_name(password_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(known, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, password_file)
    try:
        asyncio.run(go())
    except BrokerAdminError as e:
        raise _fail(str(e)) from None
    typer.echo(f"{len(ids)} device account(s) ready; passwords in {password_file}")


def register(app: typer.Typer) -> None:
    app.command("broker-init")(broker_init)
    app.command("broker-devices")(broker_devices)
