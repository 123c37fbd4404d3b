"""Webhooks against a real local HTTP server (signed, retried, dead-lettered); the
notification age limit; device online/offline from the Last Will and inactivity."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from fleet_cloud.notify.webhooks import SIGNATURE_HEADER, WebhookDispatcher, verify
from fleet_cloud.processing.config import ProcessingSettings
from fleet_cloud.processing.service import Processor
from tests.processing.conftest import drain, events_of, new_vehicle, store

SECRET = "s3cret-for-the-test-hook"


class Receiver:
    """A local HTTP server: /ok answers 200, /fail 500, /flaky 500 twice then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.flaky_left = 2
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append((self.path, dict(self.headers), body))
                code = 200
                if self.path == "/fail":
                    code = 500
                elif self.path == "/flaky" and outer.flaky_left > 0:
                    outer.flaky_left -= 1
                    code = 500
                self.send_response(code)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.requests if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def harsh_fixes(t0: int) -> list[dict[str, Any]]:
    """Cruise, then a hard stop: one harsh_braking and motion events."""
    out = []
    for i in range(40):
        spd = 50.0 if i < 30 else 0.0
        out.append({"seq": i + 1, "t": t0 + i * 2000, "lat": 48.1 + i * 1e-4, "lon": 11.5,
                    "spd": spd})  # fmt: skip
    return out


async def test_webhooks_signed_retried_dead_lettered(
    pool: asyncpg.Pool, processor: Processor, receiver: Receiver
) -> None:
    tid, vid, dev = await new_vehicle(pool)
    hooks = {}
    for path, types in (("/ok", None), ("/flaky", ["harsh_braking"]), ("/fail", ["harsh_braking"])):
        hooks[path] = await pool.fetchval(
            "INSERT INTO webhooks (tenant_id, url, secret, types) VALUES ($1, $2, $3, $4)"
            " RETURNING id",
            tid, receiver.url + path, SECRET, types,
        )  # fmt: skip
    await store(pool, dev, vid, harsh_fixes(int(time.time() * 1000) - 120_000))
    await drain(processor)
    evs = await events_of(pool, vid)
    assert "harsh_braking" in {e["type"] for e in evs}

    cfg = ProcessingSettings(webhook_backoff_s=0.05, webhook_max_attempts=3)
    disp = WebhookDispatcher(pool, cfg)
    async with httpx.AsyncClient(timeout=5) as client:
        async with asyncio.timeout(60):
            while await pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
                " AND webhook_id = ANY($1::bigint[])",
                list(hooks.values()),
            ):
                if not await disp.step(client):
                    await asyncio.sleep(0.05)

    # Every event reached /ok exactly once, signed with the webhook's secret.
    got = receiver.bodies("/ok")
    assert sorted(orjson.loads(b)["id"] for _, b in got) == sorted(e["id"] for e in evs)
    for headers, body in got:
        assert verify(SECRET, body, headers[SIGNATURE_HEADER])
        assert not verify("wrong-secret-xxxxxxxx", body, headers[SIGNATURE_HEADER])
        assert headers["X-Fleet-Event-Id"] == str(orjson.loads(body)["id"])
    rows = {
        r["webhook_id"]: r
        for r in await pool.fetch(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ANY($1::bigint[])",
            [hooks["/flaky"], hooks["/fail"]],
        )
    }
    assert rows[hooks["/flaky"]]["status"] == "sent" and rows[hooks["/flaky"]]["attempts"] == 3
    dead = rows[hooks["/fail"]]
    assert dead["status"] == "dead" and dead["attempts"] == 3
    assert dead["last_error"] == "HTTP 500" and dead["last_status"] == 500
    assert len(receiver.bodies("/fail")) == 3


async def test_old_events_are_not_notified(pool: asyncpg.Pool, receiver: Receiver) -> None:
    proc = Processor(pool, ProcessingSettings(hole_grace_s=0.0, notify_max_age_s=3600))
    tid, vid, dev = await new_vehicle(pool)
    await pool.execute(
        "INSERT INTO webhooks (tenant_id, url, secret) VALUES ($1, $2, $3)",
        tid, receiver.url + "/ok", SECRET,
    )  # fmt: skip
    old = int(time.time() * 1000) - 3 * 86_400_000  # a backlog from three days ago
    await store(pool, dev, vid, harsh_fixes(old))
    await drain(proc)
    evs = await events_of(pool, vid)
    assert evs and all(e["notify_status"] == "stale" for e in evs)
    n = await pool.fetchval(
        """SELECT count(*) FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
           WHERE e.vehicle_id = $1""",
        vid,
    )
    assert n == 0


async def test_online_offline(pool: asyncpg.Pool, processor: Processor) -> None:
    tid, vid, dev = await new_vehicle(pool)
    await pool.execute(
        "INSERT INTO event_rules (tenant_id, type, params) VALUES ($1, 'device_offline', $2)",
        tid,
        {"inactivity_s": 3},
    )

    async def status(online: bool) -> None:
        await pool.execute(
            """INSERT INTO device_status (device_id, online, status, updated_at)
               VALUES ($1, $2, $3, now()) ON CONFLICT (device_id) DO UPDATE
               SET online = EXCLUDED.online, status = EXCLUDED.status, updated_at = now()""",
            dev, online, {"v": 1, "online": online},
        )  # fmt: skip

    async def presence_events() -> list[tuple[str, str]]:
        evs = await events_of(pool, vid)
        return [(e["type"], e["details"]["reason"]) for e in evs if e["type"].startswith("device_")]

    await status(True)
    await processor.presence()  # first sight: recorded, no event
    assert await presence_events() == []
    await status(False)  # the Last Will
    await processor.presence()
    assert await presence_events() == [("device_offline", "last_will")]
    now = int(time.time() * 1000)
    await store(pool, dev, vid, [{"seq": 1, "t": now, "lat": 48.1, "lon": 11.5, "spd": 0.0}])
    await drain(processor)
    await processor.presence()
    assert await presence_events() == [("device_offline", "last_will"), ("device_online", "data")]
    await processor.presence()  # nothing changed: nothing new
    assert len(await presence_events()) == 2
    async with asyncio.timeout(30):  # no data for longer than inactivity_s
        while len(await presence_events()) < 3:
            await asyncio.sleep(0.5)
            await processor.presence()
    assert (await presence_events())[-1] == ("device_offline", "inactivity")


class Sink:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


async def test_email_over_smtp_to_a_local_sink(pool: asyncpg.Pool, processor: Processor) -> None:
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    from fleet_cloud.notify.email import EmailDispatcher
    from tests.harness import free_port

    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        tid, vid, dev = await new_vehicle(pool)
        await pool.execute(
            "INSERT INTO email_recipients (tenant_id, address, types) VALUES ($1, $2, $3)",
            tid, "dispatch@example.test", ["harsh_braking"],
        )  # fmt: skip
        await store(pool, dev, vid, harsh_fixes(int(time.time() * 1000) - 60_000))
        await drain(processor)
        cfg = ProcessingSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="fleet@x.test")
        disp = EmailDispatcher(pool, cfg)
        async with asyncio.timeout(30):
            while not sink.messages:
                await disp.step()
                await asyncio.sleep(0.05)
        (env,) = sink.messages
        assert env.rcpt_tos == ["dispatch@example.test"]
        msg = message_from_bytes(env.content)
        assert "harsh braking" in msg["Subject"] and msg["Subject"].startswith("[warning]")
        assert "Position:" in msg.get_payload()
        assert await disp.step() == 0, "sent once"
    finally:
        controller.stop()

    # The sink is gone: the next email is retried, then dead-lettered.
    tid, vid, dev = await new_vehicle(pool)
    await pool.execute(
        "INSERT INTO email_recipients (tenant_id, address) VALUES ($1, 'x@example.test')", tid
    )
    await store(pool, dev, vid, harsh_fixes(int(time.time() * 1000) - 60_000))
    await drain(processor)
    cfg = ProcessingSettings(smtp_host="127.0.0.1", smtp_port=port, webhook_backoff_s=0.01,
                             email_max_attempts=2)  # fmt: skip
    disp = EmailDispatcher(pool, cfg)
    q = """SELECT d.status, d.attempts, d.last_error FROM email_deliveries d
           JOIN email_recipients m ON m.id = d.recipient_id WHERE m.tenant_id = $1"""
    async with asyncio.timeout(30):
        while any(r["status"] == "pending" for r in await pool.fetch(q, tid)):
            await disp.step()
            await asyncio.sleep(0.02)
    rows = await pool.fetch(q, tid)
    assert rows and all(r["status"] == "dead" and r["attempts"] == 2 for r in rows)
    assert all(r["last_error"].startswith("connect:") for r in rows)
