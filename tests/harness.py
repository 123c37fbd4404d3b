"""Real services for the tests: a Mosquitto with the project's config, a fresh
PostgreSQL database, and the project's own processes, each on a free port.

Nothing here mocks a service; fixtures in conftest.py wrap these helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from fleet_cloud.broker_admin import BrokerAdmin

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "tests" / "artifacts"

# Local PostgreSQL as the current OS user over the Unix socket (what
# deploy/bootstrap.sh sets up on a fresh Debian machine); override with
# FLEET_TEST_PG_DSN to point the tests at another server.
PG_ADMIN_DSN = os.environ.get(
    "FLEET_TEST_PG_DSN", "postgresql:///postgres?host=/var/run/postgresql"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def tool(name: str) -> str:
    """A console script of this project, from the interpreter's own venv."""
    path = VENV_BIN / name
    return str(path) if path.exists() else name


@dataclass
class Proc:
    """A child process whose output goes to a log file kept for the report."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.popen is not None
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def pause(self) -> None:
        """SIGSTOP: frozen, but its files and ptys stay open (nothing in flight is lost)."""
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after timeout; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                os.killpg(self.popen.pid, signal.SIGCONT)  # a paused process must see it
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.popen.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Broker:
    """Mosquitto started from mosquitto/run-broker.sh: the project's own config.

    Secured as in production (docs/security.md): no anonymous access, the
    dynamic-security plugin, a TLS listener with a CA made by
    mosquitto/make-ca.sh. The cloud's service accounts and a test-only
    observer are created on first start; device accounts on demand with
    ``device_password``. Every secret is derived from a seed kept in the data
    directory, so a new Broker on the same data_dir (a restart) knows them.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    tls_port: int = field(default_factory=free_port)
    # Also a listener that requires a client certificate from the CA (off unless set).
    mtls_port: int | None = None
    proc: Proc | None = None
    _devices: set[str] = field(default_factory=set)

    INGEST_USER = "fleet-ingest"
    CONTROL_USER = "fleet-control"
    ADMIN_USER = "fleet-admin"
    OBSERVER_USER = "test-observer"

    @property
    def cert_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.crt"

    def secret(self, name: str) -> str:
        """A password for account ``name``, stable for this data directory."""
        import hashlib
        import hmac
        import secrets

        seed_file = self.data_dir / "test-seed"
        if not seed_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            seed_file.write_text(secrets.token_hex(16))
        return hmac.new(seed_file.read_bytes(), name.encode(), hashlib.sha256).hexdigest()[:32]

    @property
    def observer(self) -> tuple[str, str]:
        """A test-only account that may publish and subscribe anywhere under fleet/v1/."""
        return self.OBSERVER_USER, self.secret(self.OBSERVER_USER)

    def start(self) -> Broker:
        if not (self.cert_dir / "server.crt").exists():
            subprocess.run(
                [str(ROOT / "mosquitto" / "make-ca.sh"), str(self.cert_dir), "127.0.0.1",
                 "localhost"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        self.proc = Proc(
            [str(ROOT / "mosquitto" / "run-broker.sh"), str(self.port), str(self.data_dir)],
            self.data_dir / "mosquitto.log",
            {
                "FLEET_BROKER_TLS_PORT": str(self.tls_port),
                "FLEET_BROKER_CERT_DIR": str(self.cert_dir),
                "FLEET_BROKER_ADMIN_PASSWORD": self.secret(self.ADMIN_USER),
                **({"FLEET_BROKER_MTLS_PORT": str(self.mtls_port)} if self.mtls_port else {}),
            },
        ).start()
        wait_until(lambda: port_open(self.port), 10, f"mosquitto on port {self.port}")
        wait_until(lambda: port_open(self.tls_port), 10, f"mosquitto TLS on {self.tls_port}")
        if not (self.data_dir / "test-accounts-made").exists():
            self._make_accounts()
            (self.data_dir / "test-accounts-made").touch()
        return self

    def _make_accounts(self) -> None:
        from fleet_cloud.broker_acl import Acl, Role

        observer = Role(
            self.OBSERVER_USER,
            (Acl("subscribePattern", "fleet/v1/#"), Acl("publishClientSend", "fleet/v1/#")),
        )

        async def go(admin: BrokerAdmin) -> None:
            await admin.ensure_service_accounts(
                (self.INGEST_USER, self.secret(self.INGEST_USER)),
                (self.CONTROL_USER, self.secret(self.CONTROL_USER)),
            )
            await admin.ensure_role(observer)
            await admin.ensure_client(*self.observer, [observer.name])

        self.admin(go)

    def admin(self, action: Callable[[BrokerAdmin], Awaitable[T]]) -> T:
        """Run ``action(admin)`` with a BrokerAdmin logged in to this broker.

        In a thread with its own event loop, so sync tests and async tests
        (whose loop is running) can both call it.
        """
        from concurrent.futures import ThreadPoolExecutor

        from fleet_cloud.broker_admin import BrokerAdmin

        async def go() -> T:
            async with BrokerAdmin(
                self.host, self.port, self.ADMIN_USER, self.secret(self.ADMIN_USER)
            ) as admin:
                return await action(admin)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result(60)

    def device_password(self, device_id: str) -> str:
        """The device's password; its account (client id = username = device_id) is
        created if absent (an existing one is left as it is: not kicked, not re-enabled)."""
        return self.device_passwords([device_id])[device_id]

    def device_passwords(self, device_ids: Iterable[str]) -> dict[str, str]:
        """device_password for many devices, over one admin connection."""
        wanted = {d: self.secret("device:" + d) for d in device_ids}
        missing = [d for d in wanted if d not in self._devices]

        async def go(admin: BrokerAdmin) -> None:
            for d in missing:
                (found,) = await admin.execute({"command": "getClient", "username": d})
                if found.get("error"):
                    await admin.ensure_device(d, wanted[d])

        if missing:
            self.admin(go)
            self._devices.update(missing)
        return wanted

    def service_env(self) -> dict[str, str]:
        """The cloud's broker accounts as FLEET_* settings."""
        return {
            "FLEET_MQTT_USERNAME": self.INGEST_USER,
            "FLEET_MQTT_PASSWORD": self.secret(self.INGEST_USER),
            "FLEET_MQTT_CONTROL_USERNAME": self.CONTROL_USER,
            "FLEET_MQTT_CONTROL_PASSWORD": self.secret(self.CONTROL_USER),
            "FLEET_MQTT_ADMIN_USERNAME": self.ADMIN_USER,
            "FLEET_MQTT_ADMIN_PASSWORD": self.secret(self.ADMIN_USER),
        }

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def create_database(admin_dsn: str = PG_ADMIN_DSN) -> tuple[str, str]:
    """Create an empty database with a unique name; return (name, dsn)."""
    import asyncio

    import asyncpg

    name = f"fleet_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())
    return name, dsn_for(admin_dsn, name)


@contextlib.contextmanager
def migrated_database(admin_dsn: str = PG_ADMIN_DSN) -> Iterator[str]:
    """A fresh database with every migration applied (``fleet-cloud migrate``);
    yields its DSN and drops it afterwards."""
    name, dsn = create_database(admin_dsn)
    try:
        subprocess.run([tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True, timeout=120)
        yield dsn
    finally:
        drop_database(name, admin_dsn)


def drop_database(name: str, admin_dsn: str = PG_ADMIN_DSN) -> None:
    import asyncio

    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(go())


def dsn_for(admin_dsn: str, dbname: str) -> str:
    """The admin DSN with its database swapped for dbname."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


@dataclass
class Answer:
    """One HTTP answer, whatever its status (see ``call``)."""

    status: int
    body: Any
    headers: dict[str, str]  # lower-case names

    def error_code(self) -> str:
        """The code of the API's one error shape; fails if the body is not that shape."""
        assert isinstance(self.body, dict) and set(self.body) == {"error"}, self.body
        err = self.body["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str), err
        return str(err["code"])


def call(
    base_url: str, method: str, path: str, body: object | None = None, token: str | None = None
) -> Answer:
    """Any method, any status: 4xx/5xx are answers, not exceptions."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    return Answer(status, json.loads(raw) if raw else None, {k.lower(): v for k, v in hdrs.items()})


def http_json(url: str, body: object | None = None, token: str | None = None) -> object:
    """GET (or POST when body is given) a JSON API; raises urllib.error.HTTPError on 4xx/5xx."""
    import json
    import urllib.request

    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def db_fetch(dsn: str, sql: str, *args: object) -> list[dict[str, object]]:
    """Run one query from synchronous test code."""
    import asyncio

    import asyncpg

    async def go() -> list[dict[str, object]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def broker_credentials(broker: Broker, topic: str) -> tuple[str, str, str]:
    """(client id, username, password) to publish on ``topic``: the device's own account
    for a well-formed device topic, else the test observer."""
    from fleet_wire.topics import is_valid_device_id

    parts = topic.split("/")
    if len(parts) >= 4 and parts[:2] == ["fleet", "v1"] and is_valid_device_id(parts[2]):
        return parts[2], parts[2], broker.device_password(parts[2])
    user, password = broker.observer
    return f"{user}-{uuid.uuid4().hex[:8]}", user, password


def mqtt_publish(
    broker: Broker, topic: str, payload: bytes, content_type: str | None = None, qos: int = 1
) -> None:
    """Publish one message as a device would (MQTT v5, waits for PUBACK).

    On a device's topic it logs in as that device (client id = device id,
    so a live connection of the same device is taken over).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client_id, user, password = broker_credentials(broker, topic)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(user, password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        props = None
        if content_type:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = content_type
        info = client.publish(topic, payload, qos=qos, properties=props)
        info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class CloudStack:
    """``fleet-cloud serve`` (ingest + API + dashboard) on a test broker and database."""

    broker: Broker
    dsn: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    email: str = "manager@test.local"
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str = "test"
    extra_env: dict[str, str] = field(default_factory=dict)
    serve_args: list[str] = field(default_factory=list)
    proc: Proc | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "FLEET_DATABASE_URL": self.dsn,
            "FLEET_MQTT_HOST": self.broker.host,
            "FLEET_MQTT_PORT": str(self.broker.port),
            "FLEET_HTTP_HOST": "127.0.0.1",
            "FLEET_HTTP_PORT": str(self.port),
            "FLEET_JWT_SECRET": "test-secret-" + uuid.uuid4().hex,
            "FLEET_INGEST_CLIENT_PREFIX": f"ingest-test-{self.port}",
            **self.broker.service_env(),
            **self.extra_env,
        }

    def start(self) -> CloudStack:
        subprocess.run(
            [
                tool("fleet-cloud"),
                "add-user",
                self.email,
                "--password",
                self.password,
                "--tenant",
                self.tenant,
                "--dsn",
                self.dsn,
            ],
            check=True,
            timeout=60,
            capture_output=True,
        )
        self.proc = Proc(
            [tool("fleet-cloud"), "serve", *self.serve_args],
            self.log_dir / f"cloud-{self.port}.log",
            self.env(),
        ).start()

        def healthy() -> bool:
            if self.proc is None or not self.proc.alive():
                raise RuntimeError(
                    f"fleet-cloud serve exited:\n{self.proc.log() if self.proc else ''}"
                )
            try:
                doc = http_json(self.base_url + "/api/v1/health")
            except OSError:
                return False
            return isinstance(doc, dict) and doc.get("status") == "ok"

        wait_until(healthy, 30, "fleet-cloud serve to be healthy")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def token(self, email: str | None = None, password: str | None = None) -> str:
        """An access token of the test tenant's owner, or of the user given."""
        doc = http_json(
            self.base_url + "/api/v1/auth/login",
            {"email": email or self.email, "password": password or self.password},
        )
        assert isinstance(doc, dict)
        return str(doc["access_token"])

    def add_user(self, role: str) -> tuple[str, str]:
        """A new user with this role in the test tenant: (email, password)."""
        import uuid

        email, password = f"{role}-{uuid.uuid4().hex[:6]}@test.local", uuid.uuid4().hex
        subprocess.run(
            [tool("fleet-cloud"), "add-user", email, "--password", password, "--role", role,
             "--tenant", self.tenant, "--dsn", self.dsn],
            check=True, timeout=60, capture_output=True,
        )  # fmt: skip
        return email, password

    def register_vehicle(self, name: str, device_id: str) -> int:
        """Register a vehicle with its device in the test tenant; return the vehicle id."""
        import asyncio

        import asyncpg

        from fleet_cloud import directory

        async def go() -> int:
            conn = await asyncpg.connect(self.dsn)
            try:
                tid = await directory.ensure_tenant(conn, self.tenant)
                fid = await directory.ensure_fleet(conn, tid, "Test fleet")
                return await directory.ensure_vehicle_with_device(conn, tid, fid, name, device_id)
            finally:
                await conn.close()

        return asyncio.run(go())

    def stored_seqs(self, device_id: str, boot: int | None = None) -> list[int]:
        rows = db_fetch(
            self.dsn,
            "SELECT seq FROM positions"
            " WHERE device_id = $1 AND ($2::bigint IS NULL OR boot_id = $2) ORDER BY seq",
            device_id,
            boot,
        )
        return [int(r["seq"]) for r in rows]  # type: ignore[call-overload]

    def publish_fixes(self, device_id: str, fixes: list[dict[str, object]], boot: int = 1) -> None:
        """Publish fixes as wire telemetry from device_id and wait until they are stored."""
        from fleet_wire import encode_json, maybe_compress, telemetry_body, up_topic
        from fleet_wire.topics import Up

        body = telemetry_body(boot, [encode_json(f) for f in fixes])
        payload, ct = maybe_compress(body)
        mqtt_publish(self.broker, up_topic(device_id, Up.TELEMETRY), payload, ct)
        want = {int(f["seq"]) for f in fixes}  # type: ignore[call-overload]
        wait_until(
            lambda: want <= set(self.stored_seqs(device_id, boot)),
            20,
            f"fixes {sorted(want)[:5]}... of {device_id} to be stored",
            every=0.1,
        )


@dataclass
class RedisServer:
    """A throwaway redis-server on a free port, nothing kept on disk."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = Proc(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir)],
            self.data_dir / "redis.log",
        ).start()  # fmt: skip
        wait_until(lambda: port_open(self.port), 10, f"redis on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
