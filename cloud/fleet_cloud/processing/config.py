"""Processing settings, from FLEET_PROCESSING_* environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_PROCESSING_", extra="ignore")

    enabled: bool = True  # run inside `fleet-cloud serve` (one node wins the advisory lock)
    batch: int = 5000  # positions per processing transaction
    poll_s: float = 0.5  # idle wait between polls
    # A hole in ingest_seq is final after this long AND once every transaction
    # running when it was seen has ended. Longer than any ingest transaction.
    hole_grace_s: float = 30.0
    # Late data re-evaluates a vehicle once its late fixes stopped coming for this long
    # (a backlog arrives in many batches; one re-evaluation instead of one per batch).
    late_settle_s: float = 3.0
    snapshot_every_s: float = 600.0  # evaluator snapshots, in fix time
    snapshot_keep_s: float = 7 * 86_400.0  # late data older than this replays from scratch
    notify_max_age_s: float = 3_600.0  # events older than this (fix time) are not notified
    presence_every_s: float = 5.0  # online/offline evaluation period
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 2.0  # first retry delay; doubles, capped at webhook_backoff_max_s
    webhook_backoff_max_s: float = 600.0
    webhook_timeout_s: float = 10.0
    # Email over SMTP (no smtp_host: email recipients are stored but nothing is sent).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "fleet@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    email_max_attempts: int = 6
