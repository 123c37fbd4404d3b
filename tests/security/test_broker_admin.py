"""BrokerAdmin against the real plugin: idempotent ensures, password resets, role
ACLs brought to exactly what is asked, the plugin's own error messages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fleet_cloud.broker_acl import Acl, Role
from fleet_cloud.broker_admin import BrokerAdmin, BrokerAdminError
from tests.harness import Broker
from tests.security.mqtt_probe import NOT_AUTHORIZED, connect


def test_ensure_device_twice_resets_the_password(sec_broker: Broker) -> None:
    b = sec_broker
    d = f"adm-{uuid.uuid4().hex[:8]}"

    async def create(admin: BrokerAdmin) -> None:
        await admin.ensure_device(d, "first-password")
        await admin.ensure_device(d, "first-password")  # idempotent

    b.admin(create)
    s = connect(b.host, b.port, d, "first-password", d)
    assert s.ok
    s.close()

    async def reset(admin: BrokerAdmin) -> None:
        await admin.ensure_device(d, "second-password")

    b.admin(reset)
    assert connect(b.host, b.port, d, "first-password", d).connack == NOT_AUTHORIZED
    s = connect(b.host, b.port, d, "second-password", d)
    assert s.ok
    s.close()


def test_ensure_role_brings_an_existing_role_to_exactly_these_acls(sec_broker: Broker) -> None:
    name = f"adm-role-{uuid.uuid4().hex[:6]}"
    first = Role(name, (Acl("subscribeLiteral", "a/b"), Acl("publishClientSend", "c/d")))
    second = Role(name, (Acl("publishClientSend", "c/d"), Acl("subscribePattern", "e/#")))

    async def go(admin: BrokerAdmin) -> list[dict[str, Any]]:
        await admin.ensure_role(first)
        await admin.ensure_role(second)
        (got,) = await admin.run({"command": "getRole", "rolename": name})
        acls: list[dict[str, Any]] = got["data"]["role"]["acls"]
        return acls

    acls = sec_broker.admin(go)
    assert {(a["acltype"], a["topic"], a["allow"]) for a in acls} == {
        ("publishClientSend", "c/d", True),
        ("subscribePattern", "e/#", True),
    }


def test_the_plugins_error_is_raised_with_its_message(sec_broker: Broker) -> None:
    async def go(admin: BrokerAdmin) -> None:
        await admin.run({"command": "getRole", "rolename": "no-such-role-here"})

    with pytest.raises(BrokerAdminError, match="getRole: Role not found"):
        sec_broker.admin(go)


def test_a_wrong_admin_password_is_a_clear_error(sec_broker: Broker) -> None:
    import asyncio

    async def go() -> None:
        async with BrokerAdmin(sec_broker.host, sec_broker.port, "fleet-admin", "wrong"):
            pass

    with pytest.raises(BrokerAdminError, match=r"fleet-admin@127\.0\.0\.1:\d+: .*Not authorized"):
        asyncio.run(go())
