"""Webhook delivery: signed POSTs, retried with backoff, dead-lettered after N failures.

Processing writes one ``webhook_deliveries`` row per (webhook, event) in the
transaction that stores the event (an outbox), so nothing is lost between
"event stored" and "delivery attempted". Dispatchers claim due rows with
``FOR UPDATE SKIP LOCKED``: several may run, none sends a row twice at once.
Delivery is at-least-once; receivers de-duplicate with ``X-Fleet-Event-Id``.

Signature: ``X-Fleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with the webhook's secret>`` (the Stripe scheme: the timestamp
in the signed text stops replays of an old body).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time

import asyncpg
import httpx
import orjson

from fleet_cloud.processing.config import ProcessingSettings
from fleet_cloud.store import dt_to_ms

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Fleet-Signature"


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300) -> bool:
    """What a receiver does (used by the tests, documented in docs/events.md)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


_CLAIM = """
SELECT d.id, d.attempts, w.url, w.secret, e.id AS event_id, e.tenant_id, e.vehicle_id, e.type,
       e.severity, e.fix_time, e.late, e.lat, e.lon, e.geofence_id, e.details
FROM webhook_deliveries d
JOIN webhooks w ON w.id = d.webhook_id
JOIN events e ON e.id = d.event_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at
LIMIT $1
FOR UPDATE OF d SKIP LOCKED
"""


def body_of(r: asyncpg.Record) -> bytes:
    return orjson.dumps(
        {
            "id": r["event_id"],
            "vehicle_id": r["vehicle_id"],
            "type": r["type"],
            "severity": r["severity"],
            "t": dt_to_ms(r["fix_time"]),
            "late": r["late"],
            "lat": r["lat"],
            "lon": r["lon"],
            "geofence_id": r["geofence_id"],
            "details": r["details"],
        }
    )


class WebhookDispatcher:
    def __init__(self, pool: asyncpg.Pool, cfg: ProcessingSettings | None = None) -> None:
        self.pool = pool
        self.cfg = cfg or ProcessingSettings()
        self.sent = 0
        self.failed = 0

    def backoff_s(self, attempts: int) -> float:
        return float(
            min(self.cfg.webhook_backoff_max_s, self.cfg.webhook_backoff_s * 2 ** (attempts - 1))
        )

    async def step(self, client: httpx.AsyncClient, limit: int = 50) -> int:
        """Attempt the due deliveries once; return how many were attempted."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, limit)
            results = await asyncio.gather(*(self._post(client, r) for r in rows))
            for r, (ok, status, err) in zip(rows, results, strict=True):
                attempts = r["attempts"] + 1
                if ok:
                    self.sent += 1
                    await conn.execute(
                        """UPDATE webhook_deliveries SET status = 'sent', attempts = $2,
                               last_status = $3, last_error = NULL, sent_at = now()
                           WHERE id = $1""",
                        r["id"], attempts, status,
                    )  # fmt: skip
                    continue
                self.failed += 1
                dead = attempts >= self.cfg.webhook_max_attempts
                await conn.execute(
                    """UPDATE webhook_deliveries SET status = $2, attempts = $3,
                           last_status = $4, last_error = $5,
                           next_attempt_at = now() + make_interval(secs => $6)
                       WHERE id = $1""",
                    r["id"], "dead" if dead else "pending", attempts, status, err[:500],
                    self.backoff_s(attempts),
                )  # fmt: skip
                if dead:
                    log.warning("webhook delivery %s dead after %d attempts: %s",
                                r["id"], attempts, err)  # fmt: skip
            return len(rows)

    async def _post(
        self, client: httpx.AsyncClient, r: asyncpg.Record
    ) -> tuple[bool, int | None, str]:
        body = body_of(r)
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(r["secret"], body),
            "X-Fleet-Event-Id": str(r["event_id"]),
            "X-Fleet-Delivery-Attempt": str(r["attempts"] + 1),
        }
        try:
            resp = await client.post(r["url"], content=body, headers=headers)
        except httpx.HTTPError as e:
            return False, None, f"{type(e).__name__}: {e}"
        if 200 <= resp.status_code < 300:
            return True, resp.status_code, ""
        return False, resp.status_code, f"HTTP {resp.status_code}"

    async def run(self, stop: asyncio.Event | None = None, every_s: float = 1.0) -> None:
        stop = stop or asyncio.Event()
        async with httpx.AsyncClient(
            timeout=self.cfg.webhook_timeout_s, follow_redirects=False
        ) as client:
            while not stop.is_set():
                try:
                    n = await self.step(client)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                    log.warning("webhooks: database trouble (%s)", e)
                    n = 0
                if n == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=every_s)
