"""A cloud with a config signing key, and rigged devices: real MQTT clients on
the secured test broker, each logged in with its own device account, that
answer down/config and down/cmd the way the wire contract says an agent does,
with a behaviour chosen per device (apply, reject, stay silent).

Rigged clients rather than real agents: the rollout tests need devices that
fail on purpose, in exact numbers, which a healthy agent never does.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import paho.mqtt.client as mqtt
import pytest

from fleet_cloud import directory
from fleet_cloud.remote_config.signing import write_new_key
from fleet_wire import CT_JSON, Down, Up, down_topic, encode_json, up_topic
from fleet_wire.remote import Command, CommandResult, ConfigDocument, ConfigReport, verify
from tests.harness import (
    Answer,
    Broker,
    CloudStack,
    call,
    migrated_database,
    wait_until,
)

Behaviour = Literal["apply", "reject", "silent"]


# These tests get a broker and a database of their own (overriding the
# session's): with the session's cloud alive on the same ones, two remote-config
# services and two ingests shared every config, report and retained copy, and
# rollouts counted reports the other stack had taken as "no answer".
@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("remote-mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    with migrated_database() as dsn:
        yield dsn


@dataclass
class RemoteCloud:
    stack: CloudStack
    public_key: str
    token: str

    def call(self, method: str, path: str, body: object | None = None,
             token: str | None = None) -> Answer:  # fmt: skip
        return call(self.stack.base_url, method, path, body, token or self.token)

    def db(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.stack.dsn)
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(go())

    def fleet_with_devices(self, n: int, tag: str | None = None) -> tuple[int, list[str]]:
        """A new fleet in the stack's tenant with n registered devices."""
        tag = tag or uuid.uuid4().hex[:6]

        async def go() -> tuple[int, list[str]]:
            conn = await asyncpg.connect(self.stack.dsn)
            try:
                tid = await directory.ensure_tenant(conn, self.stack.tenant)
                fid = await directory.ensure_fleet(conn, tid, f"fleet-{tag}")
                devs = [f"rc-{tag}-{i:02d}" for i in range(n)]
                for d in devs:
                    await directory.ensure_vehicle_with_device(conn, tid, fid, d, d)
                return fid, devs
            finally:
                await conn.close()

        return asyncio.run(go())

    def user(self, role: str, tenant: str | None = None) -> str:
        """A token for a new user with this role (in another tenant if given)."""
        email = f"{role}-{uuid.uuid4().hex[:6]}@remote.test"
        password = uuid.uuid4().hex

        async def go() -> None:
            conn = await asyncpg.connect(self.stack.dsn)
            try:
                tid = await directory.ensure_tenant(conn, tenant or self.stack.tenant)
                await directory.ensure_user(conn, tid, email, password, role)
            finally:
                await conn.close()

        asyncio.run(go())
        ans = call(self.stack.base_url, "POST", "/api/v1/auth/login",
                   {"email": email, "password": password})  # fmt: skip
        assert ans.status == 200, ans.body
        return str(ans.body["access_token"])


@pytest.fixture(scope="module")
def remote_cloud(
    broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteCloud]:
    work = tmp_path_factory.mktemp("remote-cloud")
    key = work / "config-signing.key"
    public = write_new_key(key)
    stack = CloudStack(
        broker, database, work,
        extra_env={"FLEET_CONFIG_SIGNING_KEY_FILE": str(key), "FLEET_REMOTE_TICK_S": "0.2"},
    ).start()  # fmt: skip
    try:
        yield RemoteCloud(stack, public, stack.token())
    finally:
        stack.stop()


@dataclass
class RigDevice:
    """One rigged device: verifies every config it gets and answers per its behaviour."""

    broker: Broker
    device_id: str
    public_key: str
    behaviour: Behaviour = "apply"
    online: bool = True  # publish a retained up/status online: true on connect
    configs: list[ConfigDocument] = field(default_factory=list)
    commands: list[tuple[Command, Any]] = field(default_factory=list)  # (command, properties)
    bad: list[str] = field(default_factory=list)  # anything that broke the contract
    active_version: int = 0
    _client: mqtt.Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> RigDevice:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.device_id,
                        protocol=mqtt.MQTTv5)  # fmt: skip
        c.username_pw_set(self.device_id, self.broker.device_password(self.device_id))
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self._client = c
        connected = threading.Event()
        self._connected = connected
        c.connect(self.broker.host, self.broker.port)
        c.loop_start()
        assert connected.wait(10), f"{self.device_id} could not connect"
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.bad.append(f"connect refused: {rc}")
            return
        client.subscribe(down_topic(self.device_id, Down.CONFIG), qos=1)
        client.subscribe(down_topic(self.device_id, Down.CMD), qos=1)
        if self.online:
            self.publish(Up.STATUS, {"v": 1, "online": True}, retain=True)
        self._connected.set()

    def publish(self, kind: Up, body: Any, retain: bool = False) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        assert self._client is not None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = CT_JSON
        self._client.publish(up_topic(self.device_id, kind), encode_json(body), qos=1,
                             retain=retain, properties=props)  # fmt: skip

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic.endswith("/down/config"):
                self._config(ConfigDocument.model_validate_json(msg.payload))
            else:
                self._command(Command.model_validate_json(msg.payload), msg.properties)
        except Exception as e:  # recorded for the test to assert on
            self.bad.append(f"{msg.topic}: {e!r}")

    def _config(self, doc: ConfigDocument) -> None:
        with self._lock:
            if not verify(self.public_key, doc) or doc.device_id != self.device_id:
                self.bad.append(f"bad signature or device on version {doc.version}")
                return
            if self.configs and doc.version <= self.configs[-1].version:
                return  # retained re-delivery
            self.configs.append(doc)
            if self.behaviour == "silent":
                return
            now = int(time.time() * 1000)
            if self.behaviour == "apply":
                self.active_version = doc.version
                report = ConfigReport(version=doc.version, status="applied",
                                      active_version=doc.version, t=now)  # fmt: skip
            else:
                report = ConfigReport(version=doc.version, status="rejected",
                                      reason="rigged to reject",
                                      active_version=self.active_version, t=now)  # fmt: skip
        self.publish(Up.CONFIG, report)

    def _command(self, cmd: Command, props: Any) -> None:
        self.commands.append((cmd, props))
        if self.behaviour == "silent":
            return
        now = int(time.time() * 1000)
        if self.behaviour == "apply":
            result = CommandResult(id=cmd.id, status="done", message="rigged",
                                   result={"kind": cmd.kind, **cmd.args}, t=now)  # fmt: skip
        else:
            result = CommandResult(id=cmd.id, status="rejected", message="rigged to reject",
                                   t=now)  # fmt: skip
        self.publish(Up.CMD, result)

    def latest(self) -> ConfigDocument | None:
        with self._lock:
            return self.configs[-1] if self.configs else None


@pytest.fixture
def rig(remote_cloud: RemoteCloud, broker: Broker) -> Iterator[Any]:
    """rig(device_id, behaviour) -> a started RigDevice, stopped after the test."""
    started: list[RigDevice] = []

    def make(device_id: str, behaviour: Behaviour = "apply", online: bool = True) -> RigDevice:
        d = RigDevice(broker, device_id, remote_cloud.public_key, behaviour, online).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def wait_for(pred: Any, what: str, timeout: float = 30) -> None:
    wait_until(pred, timeout, what, every=0.1)
