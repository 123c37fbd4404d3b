"""Per-tenant request limit: a tenant over its rate gets 429 with Retry-After in the one
error shape, other tenants do not notice, and with Redis all API processes draw from
one budget. Also /metrics, which counts those refusals."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_cloud.api.tenant_ratelimit import LocalGcra
from tests.auth.conftest import PASSWORD
from tests.harness import Answer, Broker, CloudStack, RedisServer, call

RATE, BURST = 1, 5


def test_gcra_allows_the_burst_then_the_rate_per_key() -> None:
    now = [100.0]
    lim = LocalGcra(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [lim.wait(1) for _ in range(3)] == [0, 0, 0]
    assert lim.wait(1) == pytest.approx(0.5)  # the 4th waits one interval
    assert lim.wait(2) == 0  # another tenant has its own budget
    now[0] += 0.5
    assert lim.wait(1) == 0 and lim.wait(1) == pytest.approx(0.5)
    now[0] += 60  # idle: the full burst is back, not more
    assert [lim.wait(1) for _ in range(4)][-1] == pytest.approx(0.5)


def _limited_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "FLEET_TENANT_RATE_PER_S": str(RATE),
        "FLEET_TENANT_RATE_BURST": str(BURST),
        "FLEET_JWT_SECRET": "rl-" + uuid.uuid4().hex * 2,
        **(extra or {}),
    }


async def _second_tenant(dsn: str, tenant: str, email: str) -> None:
    import asyncpg

    from fleet_cloud import directory

    conn = await asyncpg.connect(dsn)
    try:
        tid = await directory.ensure_tenant(conn, tenant)
        await directory.ensure_user(conn, tid, email, PASSWORD, "viewer")
    finally:
        await conn.close()


def _login(base_url: str, email: str, password: str) -> str:
    a = call(base_url, "POST", "/api/v1/auth/login", {"email": email, "password": password})
    assert a.status == 200, a.body
    return str(a.body["access_token"])


def _hammer(base_urls: list[str], token: str, n: int) -> tuple[list[Answer], float]:
    t0 = time.monotonic()
    answers = [call(base_urls[i % len(base_urls)], "GET", "/api/v1/vehicles", token=token)
               for i in range(n)]  # fmt: skip
    return answers, time.monotonic() - t0


@pytest.fixture(scope="module")
def limited(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudStack]:
    broker = Broker(tmp_path_factory.mktemp("rl-mosquitto")).start()
    suffix = uuid.uuid4().hex[:6]
    stack = CloudStack(
        broker, database, tmp_path_factory.mktemp("rl-cloud"), tenant=f"rl-a-{suffix}",
        email=f"rl-a-{suffix}@test.local",
        # on every interface, so a non-loopback address can be tried on /metrics
        extra_env=_limited_env({"FLEET_HTTP_HOST": "0.0.0.0"}),
    )  # fmt: skip
    try:
        yield stack.start()
    finally:
        stack.stop()
        broker.stop()


def test_a_tenant_over_its_rate_gets_429_and_others_do_not(limited: CloudStack) -> None:
    other_tenant = f"rl-b-{uuid.uuid4().hex[:6]}"
    other_email = f"{other_tenant}@test.local"
    asyncio.run(_second_tenant(limited.dsn, other_tenant, other_email))
    token = _login(limited.base_url, limited.email, limited.password)
    answers, elapsed = _hammer([limited.base_url], token, 30)
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(ok) + len(refused) == len(answers), {a.status for a in answers}
    assert BURST <= len(ok) <= BURST + RATE * elapsed + 1, (len(ok), elapsed)
    first = refused[0]
    assert first.error_code() == "rate_limited"
    wait = int(first.headers["retry-after"])
    assert 1 <= wait <= 1 / RATE + 1
    # another tenant on the same process is not slowed by the first one
    other_token = _login(limited.base_url, other_email, PASSWORD)
    assert call(limited.base_url, "GET", "/api/v1/vehicles", token=other_token).status == 200
    time.sleep(wait)
    assert call(limited.base_url, "GET", "/api/v1/vehicles", token=token).status == 200


def _scrape(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url + "/metrics")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text[:2000]}")


def test_metrics_count_requests_and_refusals(limited: CloudStack) -> None:
    token = _login(limited.base_url, limited.email, limited.password)
    _hammer([limited.base_url], token, BURST + 5)  # some are refused whatever came before
    status, text = _scrape(limited.base_url)
    assert status == 200, text
    assert _metric(text, "fleet_tenant_rate_limited_total") >= 1
    assert 'route="/api/v1/vehicles",status="429"' in text
    assert _metric(text, "fleet_ws_clients") == 0
    assert "fleet_ingest_stored_total" in text and "fleet_db_pool_size" in text


def _lan_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing interface
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_metrics_are_refused_to_remote_clients_without_a_token(limited: CloudStack) -> None:
    addr = _lan_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address to call from")
    status, text = _scrape(f"http://{addr}:{limited.port}")
    assert status == 403 and '"forbidden"' in text


@pytest.fixture
def two_limited_nodes(
    database: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[CloudStack, CloudStack]]:
    broker = Broker(tmp_path / "mosquitto").start()
    env = _limited_env(
        {"FLEET_REDIS_URL": redis_server.url, "FLEET_REDIS_PREFIX": f"rl{uuid.uuid4().hex[:8]}"}
    )
    suffix = uuid.uuid4().hex[:6]
    a = CloudStack(broker, database, tmp_path, extra_env=env, tenant=f"rl-r-{suffix}",
                   email=f"rl-r-{suffix}@test.local").start()  # fmt: skip
    b = CloudStack(
        broker, database, tmp_path, tenant=a.tenant, email=a.email, password=a.password,
        extra_env={**env, "FLEET_METRICS_TOKEN": "scrape-" + suffix}, serve_args=["--no-ingest"],
    ).start()  # fmt: skip
    yield a, b
    b.stop()
    a.stop()
    broker.stop()


def test_with_redis_every_process_draws_from_one_budget(
    two_limited_nodes: tuple[CloudStack, CloudStack],
) -> None:
    a, b = two_limited_nodes
    token = _login(a.base_url, a.email, a.password)
    answers, elapsed = _hammer([a.base_url, b.base_url], token, 30)
    ok = sum(1 for x in answers if x.status == 200)
    # in-process limits would let each node pass BURST: together at least 2 x BURST
    assert BURST <= ok <= BURST + RATE * elapsed + 1, (ok, elapsed)
    assert {x.status for x in answers} == {200, 429}
    # node b has a metrics token: without it, no metrics, even from loopback
    assert _scrape(b.base_url)[0] == 401
    status, text = _scrape(b.base_url, "scrape-" + a.tenant.removeprefix("rl-r-"))
    assert status == 200 and "fleet_http_requests_total" in text
