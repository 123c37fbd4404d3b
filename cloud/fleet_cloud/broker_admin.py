"""Broker accounts, managed over MQTT through Mosquitto's dynamic-security plugin.

The cloud needs no file access to the broker host: it logs in as the dynsec
admin account and sends JSON commands on ``$CONTROL/dynamic-security/v1``;
the plugin answers on ``.../response`` (matched by correlationData) and saves
its JSON file itself. Nothing else in the cloud talks to ``$CONTROL``.

    async with BrokerAdmin.from_settings(settings) as admin:
        await admin.ensure_device("van-0007", password)
        await admin.disable_device("van-0007")   # kicked, refused, retained cleared

Errors from the plugin are raised as BrokerAdminError with its own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import ssl
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt

from fleet_cloud.broker_acl import (
    CONTROL_ROLE,
    INGEST_ROLE,
    RETAINED_CLEAR_ROLE,
    Role,
    checked_device_id,
    device_retained_topics,
    device_role,
)
from fleet_cloud.settings import Settings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"

# The internal account that clears a revoked device's retained messages.
REVOKER = "fleet-revoker"

# The plugin's own error texts that mean "already as wanted" when ensuring.
_EXISTS = ("already exists", "already has", "already in")


class BrokerAdminError(RuntimeError):
    """The broker refused or could not be reached; the message says why."""


def _acl_key(a: dict[str, Any]) -> tuple[str, str, bool]:
    return (str(a.get("acltype")), str(a.get("topic")), bool(a.get("allow")))


class BrokerAdmin:
    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        ca_file: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self.timeout_s = timeout_s
        self._password = password
        self._tls: ssl.SSLContext | None = None
        if ca_file is not None:
            self._tls = ssl.create_default_context(cafile=str(ca_file))
        self._client = aiomqtt.Client(
            host,
            port,
            username=username,
            password=password,
            identifier=f"{username}-{uuid.uuid4().hex[:12]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self._tls,
            timeout=timeout_s,
        )
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerAdmin:
        if not settings.mqtt_admin_password:
            raise BrokerAdminError(
                "FLEET_MQTT_ADMIN_PASSWORD is not set: the broker's dynamic-security admin"
                " password (DATA_DIR/admin.secret of mosquitto/run-broker.sh)"
            )
        return cls(
            settings.mqtt_host,
            settings.mqtt_port,
            settings.mqtt_admin_username,
            settings.mqtt_admin_password,
        )

    async def __aenter__(self) -> BrokerAdmin:
        try:
            await self._client.__aenter__()
            await self._client.subscribe(RESPONSE_TOPIC, qos=1)
        except aiomqtt.MqttError as e:
            raise BrokerAdminError(
                f"broker admin {self.username}@{self.host}:{self.port}: {e}"
            ) from e
        self._reader = asyncio.create_task(self._read(), name="broker-admin-responses")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        try:
            async for m in self._client.messages:
                if not isinstance(m.payload, bytes | bytearray):
                    continue
                try:
                    doc = json.loads(m.payload)
                except ValueError:
                    continue
                for r in doc.get("responses", []) if isinstance(doc, dict) else []:
                    fut = self._pending.pop(str(r.get("correlationData")), None)
                    if fut is not None and not fut.done():
                        fut.set_result(r)
        except aiomqtt.MqttError as e:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(BrokerAdminError(f"broker connection lost: {e}"))
            self._pending.clear()

    # -- the plugin's command protocol ---------------------------------------

    async def execute(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Send commands in one request; return their responses in order (errors included)."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[dict[str, Any]]] = []
        sent = []
        for c in commands:
            cid = uuid.uuid4().hex
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[cid] = fut
            futs.append(fut)
            sent.append({**c, "correlationData": cid})
        async with self._lock:
            try:
                await self._client.publish(
                    CONTROL_TOPIC, json.dumps({"commands": sent}).encode(), qos=1
                )
                async with asyncio.timeout(self.timeout_s):
                    return list(await asyncio.gather(*futs))
            except TimeoutError:
                raise BrokerAdminError(
                    f"no answer from the dynamic-security plugin within {self.timeout_s:.0f} s"
                    f" (is it loaded, and is {self.username} its admin?)"
                ) from None
            except aiomqtt.MqttError as e:
                raise BrokerAdminError(f"broker admin: {e}") from e
            finally:
                for c in sent:
                    self._pending.pop(c["correlationData"], None)

    async def run(
        self, *commands: dict[str, Any], tolerate: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """execute(), raising the first error that is not in ``tolerate`` (substring match)."""
        responses = await self.execute(*commands)
        for r in responses:
            err = r.get("error")
            if err and not any(t in str(err) for t in tolerate):
                raise BrokerAdminError(f"{r.get('command')}: {err}")
        return responses

    # -- roles and accounts -------------------------------------------------------

    async def ensure_role(self, role: Role) -> None:
        """Create the role, or bring an existing one's ACLs to exactly these."""
        want = [a.as_json() for a in role.acls]
        (created,) = await self.run(
            {"command": "createRole", "rolename": role.name, "acls": want}, tolerate=_EXISTS
        )
        if not created.get("error"):
            return
        (got,) = await self.run({"command": "getRole", "rolename": role.name})
        have = {_acl_key(a): a for a in got.get("data", {}).get("role", {}).get("acls", [])}
        wanted = {_acl_key(a): a for a in want}
        fixes: list[dict[str, Any]] = [
            {"command": "removeRoleACL", "rolename": role.name, "acltype": k[0], "topic": k[1]}
            for k in have.keys() - wanted.keys()
        ] + [
            {"command": "addRoleACL", "rolename": role.name, **wanted[k]}
            for k in wanted.keys() - have.keys()
        ]
        if fixes:
            await self.run(*fixes)

    async def ensure_client(
        self,
        username: str,
        password: str,
        roles: list[str],
        *,
        clientid: str | None = None,
    ) -> None:
        """Create the account, or reset its password and bring its client id and roles to these.

        The plugin kicks a connected client whose password, client id or roles
        change (it must log in again under the new rules), and answers
        "Internal error" to adding a role the client already has, so an
        existing account is compared first and only what differs is sent.
        """
        (created,) = await self.run(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                **({"clientid": clientid} if clientid else {}),
                "roles": [{"rolename": r} for r in roles],
            },
            tolerate=_EXISTS,
        )
        if not created.get("error"):
            return
        (got,) = await self.run({"command": "getClient", "username": username})
        client = got.get("data", {}).get("client", {})
        have = {str(r.get("rolename")) for r in client.get("roles", [])}
        fixes: list[dict[str, Any]] = [
            {"command": "setClientPassword", "username": username, "password": password}
        ]
        if client.get("clientid") != clientid:
            fixes.append(
                {"command": "setClientId", "username": username,
                 **({"clientid": clientid} if clientid else {})}
            )  # fmt: skip
        fixes += [
            {"command": "removeClientRole", "username": username, "rolename": r}
            for r in sorted(have - set(roles))
        ] + [
            {"command": "addClientRole", "username": username, "rolename": r}
            for r in roles
            if r not in have
        ]
        if client.get("disabled"):
            fixes.append({"command": "enableClient", "username": username})
        await self.run(*fixes)

    async def ensure_service_accounts(
        self, ingest: tuple[str, str] | None, control: tuple[str, str] | None
    ) -> None:
        """The cloud's roles and accounts (fleet-cloud broker-init)."""
        for role in (INGEST_ROLE, CONTROL_ROLE):
            await self.ensure_role(role)
        if ingest is not None:
            await self.ensure_client(ingest[0], ingest[1], [INGEST_ROLE.name])
        if control is not None:
            await self.ensure_client(control[0], control[1], [CONTROL_ROLE.name])

    # -- devices ---------------------------------------------------------------------

    async def ensure_device(self, device_id: str, password: str) -> None:
        """Create the device's account (or reset its password) and enable it.

        Username = client id = device id: the plugin refuses the device under
        any other client id.
        """
        role = device_role(device_id)
        await self.ensure_role(role)
        await self.ensure_client(device_id, password, [role.name], clientid=device_id)

    async def disable_device(self, device_id: str) -> bool:
        """Kick the device now, refuse its reconnects, and clear its retained messages.

        Returns False when the device has no broker account (nothing to kick
        or refuse); its retained messages are cleared all the same.
        """
        checked_device_id(device_id)
        (r,) = await self.run(
            {"command": "disableClient", "username": device_id}, tolerate=("not found",)
        )
        await self.clear_retained(device_id)
        return not r.get("error")

    async def enable_device(self, device_id: str) -> bool:
        """Let the device log in again; False when it has no broker account."""
        checked_device_id(device_id)
        (r,) = await self.run(
            {"command": "enableClient", "username": device_id}, tolerate=("not found",)
        )
        return not r.get("error")

    async def clear_retained(self, device_id: str) -> None:
        """Publish an empty retained message on each of the device's retained topics.

        Done as a separate, internal account (REVOKER) with only that right:
        dynsec's admin role can talk to $CONTROL only, and changing the admin's
        own roles would make the plugin kick this very connection. Its
        password is derived from the admin's, so every API process holding the
        admin password uses the same one and concurrent revocations agree.
        """
        topics = device_retained_topics(device_id)
        await self.ensure_role(RETAINED_CLEAR_ROLE)
        password = hmac.new(self._password.encode(), b"fleet-revoker", "sha256").hexdigest()
        await self.ensure_client(REVOKER, password, [RETAINED_CLEAR_ROLE.name])
        try:
            async with aiomqtt.Client(
                self.host,
                self.port,
                username=REVOKER,
                password=password,
                identifier=f"{REVOKER}-{uuid.uuid4().hex[:12]}",
                protocol=aiomqtt.ProtocolVersion.V5,
                tls_context=self._tls,
                timeout=self.timeout_s,
            ) as client:
                for topic in topics:
                    await client.publish(topic, b"", qos=1, retain=True)
        except aiomqtt.MqttError as e:
            raise BrokerAdminError(f"clearing retained messages of {device_id}: {e}") from e
