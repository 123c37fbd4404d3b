"""Prometheus metrics at ``GET /metrics`` (text exposition format, prometheus-client).

Who may scrape: with FLEET_METRICS_TOKEN set, callers send it as a bearer token;
without it, only loopback clients (a Prometheus on the same host, or a sidecar) are
answered and everyone else gets 403. The figures are operational aggregates (no
tenant's data), but they show traffic, so they are not public by default.

Most values are read when scraped (ingest counters, WebSocket clients, pool), so
nothing on the hot paths changes for them; HTTP requests are counted by a small
ASGI middleware, labelled by route template (never the raw path: ids would make
the label set unbounded).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_cloud.api.errors import ApiError, ErrorResponse
from fleet_cloud.api.tenant_ratelimit import TenantLimiter

router = APIRouter(tags=["ops"])

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class AppCollector(Collector):
    """Reads the app's own counters at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        st = self.app.state
        workers = list(getattr(st, "ingest_workers", []) or [])
        http_ingest = getattr(st, "http_ingest", None)
        if http_ingest is not None and http_ingest not in workers:
            workers.append(http_ingest)
        totals: Counter[str] = Counter()
        for w in workers:
            totals.update(w.counters)
        plain = {
            "messages": "MQTT messages taken by ingest",
            "fixes": "fixes decoded by ingest (accepted or filtered)",
            "stored": "fixes written to the database (new rows)",
            "duplicates": "fixes already stored (retransmissions)",
        }
        for name, doc in plain.items():
            yield CounterMetricFamily(f"fleet_ingest_{name}", doc, value=totals.get(name, 0))
        for prefix, doc in (
            ("filtered_", "fixes a plausibility filter flagged, by reason"),
            ("dead_", "messages dead-lettered, by reason"),
        ):
            fam = CounterMetricFamily(f"fleet_ingest_{prefix.rstrip('_')}", doc, labels=["reason"])
            for k, v in sorted(totals.items()):
                if k.startswith(prefix):
                    fam.add_metric([k[len(prefix) :]], v)
            yield fam
        yield GaugeMetricFamily(
            "fleet_ingest_connected_workers",
            "ingest workers of this process connected to the broker",
            value=sum(1 for w in getattr(st, "ingest_workers", []) or [] if w.connected),
        )
        hub = getattr(st, "hub", None)
        if hub is not None:
            yield GaugeMetricFamily(
                "fleet_ws_clients", "open WebSocket connections", value=len(hub.clients)
            )
            yield CounterMetricFamily(
                "fleet_ws_frames_sent", "WebSocket frames sent", value=hub.frames_sent
            )
        live = getattr(st, "live", None)
        if live is not None:
            yield GaugeMetricFamily(
                "fleet_live_vehicles", "vehicles with a live state in this process", value=len(live)
            )
        pool = getattr(st, "pool", None)
        if pool is not None:
            yield GaugeMetricFamily("fleet_db_pool_size", "database connections open",
                                    value=pool.get_size())  # fmt: skip
            yield GaugeMetricFamily("fleet_db_pool_idle", "database connections idle",
                                    value=pool.get_idle_size())  # fmt: skip
        lim: TenantLimiter | None = getattr(st, "tenant_limiter", None)
        yield CounterMetricFamily(
            "fleet_tenant_rate_limited",
            "requests refused by the per-tenant rate limit (429)",
            value=lim.refused if lim else 0,
        )


class HttpMetrics:
    """ASGI middleware: request count and duration by method, route template and status."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = PromCounter(
            "fleet_http_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "fleet_http_request_seconds", "HTTP request duration", ["route"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_label(scope)
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.seconds.labels(route).observe(time.perf_counter() - t0)


def _route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return str(path) or "static"


def instrument(app: FastAPI) -> None:
    """Give the app its own registry (several apps in one process stay apart)."""
    registry = CollectorRegistry()
    registry.register(AppCollector(app))
    app.state.metrics_registry = registry
    app.add_middleware(HttpMetrics, registry=registry)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (text exposition format)",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        401: {"model": ErrorResponse, "description": "FLEET_METRICS_TOKEN set and not sent"},
        403: {
            "model": ErrorResponse,
            "description": "No token configured and not a loopback client",
        },
    },
)
async def metrics(request: Request) -> Response:
    token: str | None = request.app.state.settings.metrics_token
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "unauthorized", "metrics need the metrics bearer token")
    elif (request.client.host if request.client else "") not in LOOPBACK:
        raise ApiError(
            403,
            "forbidden",
            "metrics are served to loopback clients only "
            "(set FLEET_METRICS_TOKEN to scrape from elsewhere)",
        )
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
