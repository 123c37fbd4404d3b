"""A cloud that provisions units: its own secured broker (TLS + dynamic security),
the CA and a config signing key, plus users of the roles that matter here."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Answer, Broker, CloudStack, call, tool

PASSWORD = "pw-" + uuid.uuid4().hex


@dataclass
class ProvCloud:
    stack: CloudStack
    broker: Broker
    tenant_b: str
    users: dict[str, str]  # role -> email in the stack's tenant (plus "owner_b")

    @property
    def url(self) -> str:
        return self.stack.base_url

    def token(self, role: str) -> str:
        a = call(self.url, "POST", "/api/v1/auth/login",
                 {"email": self.users[role], "password": PASSWORD})  # fmt: skip
        assert a.status == 200, a.body
        return str(a.body["access_token"])

    def call(self, method: str, path: str, body: object = None, role: str = "manager") -> Answer:
        return call(self.url, method, path, body, self.token(role))

    def vehicle(self, name: str, tenant: str | None = None) -> int:
        """A vehicle without a device (what a new installation starts from)."""
        return asyncio.run(_vehicle(self.stack.dsn, tenant or self.stack.tenant, name))

    def claim(self, vehicle_id: int, **body: Any) -> dict[str, Any]:
        a = self.call("POST", f"/api/v1/vehicles/{vehicle_id}/claims", body)
        assert a.status == 201, a.body
        return dict(a.body)

    def db(self, sql: str, *args: object) -> Any:
        async def go() -> Any:
            import asyncpg

            conn = await asyncpg.connect(self.stack.dsn)
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(go())


async def _vehicle(dsn: str, tenant: str, name: str) -> int:
    import asyncpg

    from fleet_cloud import directory

    conn = await asyncpg.connect(dsn)
    try:
        tid = await directory.ensure_tenant(conn, tenant)
        fid = await directory.ensure_fleet(conn, tid, "Provisioning")
        vid = await conn.fetchval(
            "INSERT INTO vehicles (tenant_id, fleet_id, name) VALUES ($1, $2, $3) RETURNING id",
            tid,
            fid,
            name,
        )
        return int(vid)
    finally:
        await conn.close()


async def _users(dsn: str, tenant: str, emails: dict[str, str]) -> None:
    import asyncpg

    from fleet_cloud import directory

    conn = await asyncpg.connect(dsn)
    try:
        tid = await directory.ensure_tenant(conn, tenant)
        for role, email in emails.items():
            await directory.ensure_user(conn, tid, email, PASSWORD, role)
    finally:
        await conn.close()


def signing_key(path: Path) -> None:
    """The config signing key, made by the operator's own command."""
    subprocess.run(
        [tool("fleet-cloud"), "config-keygen", "--file", str(path)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def prov_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # A broker of its own: on a shared one, another stack's ingest would take a
    # share of this stack's fixes (shared subscription).
    b = Broker(tmp_path_factory.mktemp("prov-mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def prov_cloud(
    prov_broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvCloud]:
    d = tmp_path_factory.mktemp("prov-cloud")
    key_file = d / "config-signing.key"
    signing_key(key_file)
    suffix = uuid.uuid4().hex[:6]
    tenant = f"prov-{suffix}"
    stack = CloudStack(
        prov_broker,
        database,
        d,
        email=f"stack-{suffix}@prov.test",
        tenant=tenant,
        extra_env={
            "FLEET_PUBLIC_MQTT_HOST": prov_broker.host,
            "FLEET_PUBLIC_MQTT_PORT": str(prov_broker.port),
            "FLEET_PUBLIC_MQTT_TLS_PORT": str(prov_broker.tls_port),
            "FLEET_BROKER_CA_FILE": str(prov_broker.ca_file),
            "FLEET_CONFIG_SIGNING_KEY_FILE": str(key_file),
        },
    )
    users = {r: f"{r}-{suffix}@prov.test" for r in ("owner", "manager", "installer", "viewer")}
    try:
        stack.start()
        asyncio.run(_users(database, tenant, users))
        users["owner_b"] = f"owner-b-{suffix}@prov.test"
        asyncio.run(_users(database, f"prov-b-{suffix}", {"owner": users["owner_b"]}))
        yield ProvCloud(stack, prov_broker, f"prov-b-{suffix}", users)
    finally:
        stack.stop()
