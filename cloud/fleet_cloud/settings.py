"""Cloud settings, from FLEET_* environment variables (12-factor)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    database_url: str = "postgresql:///fleet?host=/var/run/postgresql"
    db_pool_size: int = 8

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    # The ingest account (role fleet-ingest, docs/security.md).
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    # The account that publishes config and commands to devices (role fleet-control).
    mqtt_control_username: str = "fleet-control"
    mqtt_control_password: str | None = None
    # The broker's dynamic-security admin (fleet_cloud.broker_admin only):
    # creates, disables and enables device accounts.
    mqtt_admin_username: str = "fleet-admin"
    mqtt_admin_password: str | None = None
    # The broker as vehicles reach it, handed to each unit at provisioning
    # (docs/provisioning.md). Host and plain port default to mqtt_host/mqtt_port;
    # with a TLS port and the CA file set, units are told to use TLS.
    public_mqtt_host: str | None = None
    public_mqtt_port: int | None = None
    public_mqtt_tls_port: int | None = None
    broker_ca_file: Path | None = None
    # Unknown claim tokens per client IP per window before POST /provision answers 429.
    provision_max_failures: int = 10
    provision_window_s: int = 300
    # Ingest worker client ids are "<prefix>-<n>": stable across restarts so a
    # worker resumes its persistent session instead of leaving one behind.
    ingest_client_prefix: str = "fleet-ingest"
    ingest_workers: int = 1
    # Mosquitto keeps handing a share of the shared subscription to an ingest
    # session that is offline but not expired, and queues it there. Long enough
    # to resume across a restart; short, so a worker that never comes back does
    # not hold traffic for long (devices resend whatever is not acked).
    ingest_session_expiry_s: int = 120
    ingest_batch_max: int = 2000  # fixes per database transaction
    ingest_flush_ms: int = 250  # a fix waits at most this long for its batch
    # Bound on fixes held while the database is slow or down; past it, ingest
    # stops reading and the broker/device keep the data (devices resend
    # everything not acked), so memory stays bounded.
    ingest_max_pending: int = 50_000

    # Plausibility limits (per-device overrides in devices.filter_overrides).
    filter_max_speed_kmh: float = 300.0
    filter_future_skew_s: float = 300.0
    filter_max_age_days: float = 90.0
    filter_max_hdop: float = 20.0
    filter_min_sats: int = 3

    retention_days: int = 365  # raw positions and engine samples
    rollup_interval_s: float = 60.0  # how often hourly statistics catch up

    redis_url: str | None = None  # optional: multi-node live state and fan-out
    redis_prefix: str = "fleet"  # key and channel prefix (several deployments, one Redis)

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Browser origins allowed on the WebSocket besides the app's own.
    allowed_origins: list[str] = Field(default_factory=list)
    # HS256 key. Without one, a random key is made per process: tokens then die
    # with the process and several API processes cannot share them.
    jwt_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    jwt_ttl_s: int = 3600
    ws_tick_ms: int = 250  # coalescing period of WebSocket position frames

    tiles_url: str = ""  # e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png
    tiles_attribution: str = ""
    map_center: tuple[float, float] = (52.52, 13.405)
    map_zoom: int = 12

    # Auth (see docs/api.md). Refresh tokens rotate on every use; a session
    # lives at most this long without a new login.
    refresh_ttl_s: int = 30 * 86400
    # Failed logins per (email, client IP) per window before answering 429.
    login_max_failures: int = 10
    login_window_s: int = 60
    # Requests per second per tenant (all its users and keys), with bursts up to
    # tenant_rate_burst; 0 turns the limit off. Shared through Redis when configured.
    tenant_rate_per_s: float = 200.0
    tenant_rate_burst: int = 400
    # GET /metrics: with a token, callers must send it as a bearer token; without
    # one, only loopback clients (a Prometheus on the same host) are answered.
    metrics_token: str | None = None

    # Remote config (docs/remote-config.md): the 32-byte Ed25519 seed that signs
    # every desired config (`fleet-cloud config-keygen` writes it, mode 0600).
    config_signing_key_file: Path | None = None
    # How often the remote-config service republishes, advances rollouts and
    # expires commands when nothing wakes it earlier.
    remote_tick_s: float = 1.0
