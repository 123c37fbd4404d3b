"""The role matrix, generated from the application's own routes: every write declares
the roles it allows (require_role), and every other role gets 403 from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute

from fleet_cloud.api.app import create_app
from fleet_cloud.api.auth import RoleCheck
from fleet_cloud.settings import Settings
from tests.auth.conftest import ROLES, AuthCloud

READERS = ("owner", "manager", "dispatcher", "viewer")

# Writes that are not a role's business: they establish or end who the caller is,
# or a device (not a user) authenticates with its device token.
NOT_ROLE_CHECKED = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/ingest"),
    ("POST", "/api/v1/gps"),
    ("POST", "/api/v1/tracking/batch"),
    ("POST", "/api/v1/provision"),  # a unit redeeming its claim token (no user)
}
# Fitting a unit is the installer's job: they create and revoke claim tokens.
INSTALLER_WRITES = {
    ("POST", "/api/v1/vehicles/{vehicle_id}/claims"),
    ("DELETE", "/api/v1/vehicles/{vehicle_id}/claims/{claim_id}"),
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# Reads that need no token at all (the dashboard's boot, probes, a customer's tracking link).
# /metrics has its own credential (FLEET_METRICS_TOKEN, or loopback only).
PUBLIC_READS = {"/api/v1/ui-config", "/api/v1/health", "/api/v1/track/{token}", "/metrics"}


def _routes() -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(method, path, allowed roles or None) of every API operation."""
    app = create_app(Settings(), run_ingest=False)
    out: list[tuple[str, str, tuple[str, ...] | None]] = []
    for r in _api_routes(app.routes):
        checks = [d.call for d in r.dependant.dependencies if isinstance(d.call, RoleCheck)]
        roles = checks[0].roles if checks else None
        out.extend((m, r.path, roles) for m in sorted(r.methods or ()))
    assert len(out) > 30, "the route walk found too little: has FastAPI changed?"
    return out


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):  # FastAPI >= 0.16x includes routers lazily
            yield from _api_routes(r.original_router.routes)


ROUTES = _routes()


@pytest.fixture(scope="module")
def tokens(auth_cloud: AuthCloud) -> dict[str, str]:
    return {role: auth_cloud.token(role) for role in ROLES}


def test_every_write_checks_the_role() -> None:
    unchecked = [
        (m, p)
        for m, p, roles in ROUTES
        if m in WRITES and roles is None and (m, p) not in NOT_ROLE_CHECKED
    ]
    assert not unchecked, f"writes without require_role: {unchecked}"


def test_viewers_and_installers_write_nothing() -> None:
    for m, p, roles in ROUTES:
        if m in WRITES and roles is not None:
            assert "viewer" not in roles, (m, p, roles)
            assert "installer" not in roles or (m, p) in INSTALLER_WRITES, (m, p, roles)


def _fill(path: str) -> str:
    return re.sub(r"\{rule\}", "overspeed", re.sub(r"\{\w+_id\}", "999999999", path))


@pytest.mark.parametrize(
    ("method", "path", "roles"),
    [r for r in ROUTES if r[2] is not None],
    ids=[f"{m} {p}" for m, p, roles in ROUTES if roles is not None],
)
def test_role_matrix(
    auth_cloud: AuthCloud,
    tokens: dict[str, str],
    method: str,
    path: str,
    roles: tuple[str, ...],
) -> None:
    # an empty body: the role check answers before the body is validated
    body: dict[str, object] | None = {} if method in ("POST", "PUT") else None
    for role in ROLES:
        a = auth_cloud.call(method, _fill(path), body, tokens[role])
        if role in roles:
            assert a.status != 403, (role, a.body)
        else:
            assert a.status == 403 and a.error_code() == "forbidden", (role, a.status, a.body)


def test_every_reader_reads_the_tenant_lists(auth_cloud: AuthCloud, tokens: dict[str, str]) -> None:
    lists = [
        (p, roles)
        for m, p, roles in ROUTES
        if m == "GET" and "{" not in p and p not in PUBLIC_READS and p.startswith("/api/v1/")
    ]
    assert ("/api/v1/events", READERS) in lists
    for p, roles in lists:
        query = "?lat=52.5&lon=13.4" if p.endswith("/near") else ""
        for role in ROLES:
            a = auth_cloud.call("GET", p + query, token=tokens[role])
            assert a.status == (200 if roles is None or role in roles else 403), (p, role, a.body)
        assert auth_cloud.call("GET", p + query).status == 401, p


def test_installers_read_only_what_fitting_a_device_needs() -> None:
    """The matrix in docs/api.md: vehicles, their live state and positions; nothing else."""
    theirs = {p for m, p, roles in ROUTES if m == "GET" and (roles is None or "installer" in roles)}
    assert theirs - PUBLIC_READS == {
        "/api/v1/vehicles",
        "/api/v1/vehicles/near",
        "/api/v1/vehicles/{vehicle_id}/positions",
        "/api/v1/vehicles/{vehicle_id}/stats",
        "/api/v1/claims",
        "/api/v1/vehicles/{vehicle_id}/claims",
        # which unit is where, and whether it reports (api/resources.py, api/exports.py)
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/fleets",
        "/api/v1/fleets/{fleet_id}",
        "/api/v1/fleets/{fleet_id}/vehicles",
        "/api/v1/vehicles/{vehicle_id}",
        "/api/v1/vehicles/{vehicle_id}/positions.json",
        "/api/v1/vehicles/{vehicle_id}/positions.geojson",
        "/api/v1/vehicles/{vehicle_id}/positions.gpx",
        "/api/v1/vehicles/{vehicle_id}/positions.csv",
    }
