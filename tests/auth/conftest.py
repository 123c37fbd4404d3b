"""A cloud with a known JWT key (to forge tokens with it) and two tenants with users of
every role. Tenant A is the stack's own; tenant B is the one A must never see."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.harness import Answer, Broker, CloudStack, call

ROLES = ("owner", "manager", "dispatcher", "viewer", "installer")
PASSWORD = "pw-" + uuid.uuid4().hex


@dataclass
class AuthCloud:
    stack: CloudStack
    secret: str
    tenant_b: str
    users: dict[str, str] = field(default_factory=dict)  # role -> email, tenant A
    owner_b: str = ""

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def call(
        self, method: str, path: str, body: object | None = None, token: str | None = None
    ) -> Answer:
        return call(self.base_url, method, path, body, token)

    def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        a = self.call("POST", "/api/v1/auth/login", {"email": email, "password": password})
        assert a.status == 200, a.body
        return dict(a.body)

    def token(self, role: str = "owner") -> str:
        return str(self.login(self.users[role])["access_token"])

    def token_b(self) -> str:
        return str(self.login(self.owner_b)["access_token"])

    def db(self, sql: str, *args: object) -> Any:
        import asyncpg

        async def go() -> Any:
            conn = await asyncpg.connect(self.stack.dsn)
            try:
                return await conn.fetchval(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(go())


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


@pytest.fixture(scope="session")
def auth_cloud(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthCloud]:
    # A broker of its own: on the shared one, this stack's ingest would take half of
    # the other stacks' fixes (shared subscription) and their live state would miss them.
    broker = Broker(tmp_path_factory.mktemp("auth-mosquitto")).start()
    secret = "auth-test-" + uuid.uuid4().hex + uuid.uuid4().hex  # >= 64 bytes
    suffix = uuid.uuid4().hex[:6]
    tenant_a, tenant_b = f"auth-a-{suffix}", f"auth-b-{suffix}"
    stack = CloudStack(
        broker,
        database,
        tmp_path_factory.mktemp("auth-cloud"),
        email=f"stack-owner-{suffix}@a.test",
        tenant=tenant_a,
        extra_env={"FLEET_JWT_SECRET": secret},
    )
    try:
        stack.start()
        users = {role: f"{role}-{suffix}@a.test" for role in ROLES}
        owner_b = f"owner-{suffix}@b.test"
        asyncio.run(_users(database, tenant_a, users))
        asyncio.run(_users(database, tenant_b, {"owner": owner_b}))
        yield AuthCloud(stack, secret, tenant_b, users, owner_b)
    finally:
        stack.stop()
        broker.stop()
