"""Email notifications over SMTP, from the email_deliveries outbox.

Same life cycle as webhooks: claimed with SKIP LOCKED, retried with doubling
backoff, dead after ``email_max_attempts``. smtplib is blocking, so each send
runs in a worker thread; one SMTP session serves one dispatcher step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
from email.message import EmailMessage
from typing import Any

import asyncpg

from fleet_cloud.processing.config import ProcessingSettings

log = logging.getLogger(__name__)

_CLAIM = """
SELECT d.id, d.attempts, m.address, e.id AS event_id, e.vehicle_id, v.name AS vehicle,
       e.type, e.severity, e.fix_time, e.late, e.lat, e.lon, e.details
FROM email_deliveries d
JOIN email_recipients m ON m.id = d.recipient_id
JOIN events e ON e.id = d.event_id
JOIN vehicles v ON v.id = e.vehicle_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at
LIMIT $1
FOR UPDATE OF d SKIP LOCKED
"""


def message_for(cfg: ProcessingSettings, r: asyncpg.Record | dict[str, Any]) -> EmailMessage:
    msg = EmailMessage()
    kind = str(r["type"]).replace("_", " ")
    msg["Subject"] = f"[{r['severity']}] {r['vehicle']}: {kind}"
    msg["From"] = cfg.smtp_from
    msg["To"] = r["address"]
    msg["X-Fleet-Event-Id"] = str(r["event_id"])
    lines = [
        f"Vehicle:  {r['vehicle']} (id {r['vehicle_id']})",
        f"Event:    {kind} ({r['severity']})",
        f"Time:     {r['fix_time'].isoformat()}" + ("  (reported late)" if r["late"] else ""),
    ]
    if r["lat"] is not None:
        lines.append(f"Position: {r['lat']:.6f}, {r['lon']:.6f}")
    for k, v in (r["details"] or {}).items():
        lines.append(f"{k}: {v}")
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailDispatcher:
    def __init__(self, pool: asyncpg.Pool, cfg: ProcessingSettings) -> None:
        self.pool = pool
        self.cfg = cfg

    def _send_all(self, msgs: list[EmailMessage]) -> list[str | None]:
        """Blocking: one SMTP session, one result (None = accepted) per message."""
        cfg = self.cfg
        assert cfg.smtp_host is not None
        try:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.webhook_timeout_s)
        except (OSError, smtplib.SMTPException) as e:
            return [f"connect: {e}"] * len(msgs)
        out: list[str | None] = []
        try:
            if cfg.smtp_starttls:
                smtp.starttls()
            if cfg.smtp_username:
                smtp.login(cfg.smtp_username, cfg.smtp_password or "")
            for m in msgs:
                try:
                    smtp.send_message(m)
                    out.append(None)
                except (OSError, smtplib.SMTPException) as e:
                    out.append(f"{type(e).__name__}: {e}")
        except (OSError, smtplib.SMTPException) as e:
            out += [f"{type(e).__name__}: {e}"] * (len(msgs) - len(out))
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        return out

    async def step(self, limit: int = 50) -> int:
        if not self.cfg.smtp_host:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, limit)
            if not rows:
                return 0
            errors = await asyncio.to_thread(
                self._send_all, [message_for(self.cfg, r) for r in rows]
            )
            for r, err in zip(rows, errors, strict=True):
                attempts = r["attempts"] + 1
                if err is None:
                    await conn.execute(
                        """UPDATE email_deliveries SET status = 'sent', attempts = $2,
                               sent_at = now(), last_error = NULL WHERE id = $1""",
                        r["id"],
                        attempts,
                    )
                    continue
                dead = attempts >= self.cfg.email_max_attempts
                delay = min(
                    self.cfg.webhook_backoff_max_s,
                    self.cfg.webhook_backoff_s * 2 ** (attempts - 1),
                )
                await conn.execute(
                    """UPDATE email_deliveries SET status = $2, attempts = $3, last_error = $4,
                           next_attempt_at = now() + make_interval(secs => $5) WHERE id = $1""",
                    r["id"],
                    "dead" if dead else "pending",
                    attempts,
                    err[:500],
                    float(delay),
                )
            return len(rows)

    async def run(self, stop: asyncio.Event | None = None, every_s: float = 1.0) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                n = await self.step()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("email: database trouble (%s)", e)
                n = 0
            if n == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=every_s)
