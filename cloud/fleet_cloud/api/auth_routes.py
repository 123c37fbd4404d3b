"""Auth endpoints: login, refresh (rotating), logout, and API keys for integrations.

A login opens a session (a refresh-token family). Each refresh token works
once: using it returns a new pair, and using it again (a stolen copy, or the
legitimate client after the thief) revokes the whole session, including the
access tokens issued in it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import (
    API_KEY_PREFIX,
    CurrentUser,
    Principal,
    issue_token,
    new_secret,
    require_role,
    sha256,
    verify_password,
)
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from fleet_cloud.api.ratelimit import FailureLimiter
from fleet_cloud.settings import Settings

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

REFRESH_PREFIX = "frt_"
KEY_ADMINS = ("owner", "manager")
Role = Literal["owner", "manager", "dispatcher", "viewer", "installer"]


class LoginRequest(BaseModel):
    email: Annotated[str, Field(min_length=3, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class UserOut(BaseModel):
    email: str
    role: str
    tenant_id: int


class LoginResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str = Field(description="single use: POST it to /auth/refresh for a new pair")
    refresh_expires_in: int = Field(description="seconds until the session needs a new login")
    user: UserOut


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class LogoutRequest(BaseModel):
    refresh_token: Annotated[str | None, Field(max_length=200)] = None


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _limiter(request: Request) -> FailureLimiter:
    lim: FailureLimiter | None = getattr(request.app.state, "login_limiter", None)
    if lim is None:
        s: Settings = request.app.state.settings
        lim = request.app.state.login_limiter = FailureLimiter(
            s.login_max_failures, s.login_window_s
        )
    return lim


async def _new_refresh(conn: asyncpg.Connection, session_id: str, expires_at: datetime) -> str:
    token = new_secret(REFRESH_PREFIX)
    await conn.execute(
        """INSERT INTO refresh_tokens (token_sha256, session_id, expires_at)
           VALUES ($1, $2::uuid, $3)""",
        sha256(token),
        session_id,
        expires_at,
    )
    return token


def _pair(
    settings: Settings, p: Principal, session_id: str, refresh: str, expires_at: datetime
) -> LoginResponse:
    return LoginResponse(
        access_token=issue_token(settings, p, session_id),
        expires_in=settings.jwt_ttl_s,
        refresh_token=refresh,
        refresh_expires_in=max(0, int((expires_at - datetime.now(UTC)).total_seconds())),
        user=UserOut(email=p.email, role=p.role, tenant_id=p.tenant_id),
    )


@router.post(
    "/auth/login",
    response_model=LoginResponse,
    tags=["auth"],
    responses={
        429: {"model": ErrorResponse, "description": "Too many failed logins; see Retry-After"}
    },
)
async def login(body: LoginRequest, request: Request) -> LoginResponse:
    email = body.email.lower()
    key = (email, request.client.host if request.client else "")
    limiter = _limiter(request)
    wait = limiter.retry_after(key)
    if wait:
        err = ApiError(429, "too_many_attempts", f"too many failed logins; retry in {wait} s")
        err.headers = {"Retry-After": str(wait)}
        raise err
    pool = _pool(request)
    row = await pool.fetchrow(
        "SELECT id, tenant_id, email, password_hash, role FROM users WHERE email = $1", email
    )
    if not verify_password(row["password_hash"] if row else None, body.password) or row is None:
        limiter.failed(key)
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    limiter.succeeded(key)
    settings: Settings = request.app.state.settings
    p = Principal(row["id"], row["tenant_id"], row["email"], row["role"])
    session_id = str(uuid.uuid4())
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.refresh_ttl_s)
    async with pool.acquire() as conn, conn.transaction():
        # Housekeeping: this user's sessions that can no longer be refreshed.
        await conn.execute(
            """DELETE FROM auth_sessions WHERE user_id = $1
               AND created_at < now() - make_interval(secs => $2)""",
            p.user_id,
            settings.refresh_ttl_s + settings.jwt_ttl_s,
        )
        await conn.execute(
            "INSERT INTO auth_sessions (id, user_id) VALUES ($1::uuid, $2)", session_id, p.user_id
        )
        refresh = await _new_refresh(conn, session_id, expires_at)
    return _pair(settings, p, session_id, refresh, expires_at)


_REFRESH_ROW = """
SELECT t.session_id::text AS session_id, t.used_at, t.expires_at, s.revoked_at,
       u.id AS user_id, u.tenant_id, u.email, u.role
FROM refresh_tokens t
JOIN auth_sessions s ON s.id = t.session_id
JOIN users u ON u.id = s.user_id
WHERE t.token_sha256 = $1
FOR UPDATE OF t"""


async def _revoke_session(conn: asyncpg.Connection, session_id: str, why: str) -> None:
    await conn.execute(
        """UPDATE auth_sessions SET revoked_at = now(), revoked_why = $2
           WHERE id = $1::uuid AND revoked_at IS NULL""",
        session_id,
        why,
    )


@router.post(
    "/auth/refresh",
    response_model=LoginResponse,
    tags=["auth"],
    summary="Trade a refresh token for a new access token and a new refresh token",
)
async def refresh(body: RefreshRequest, request: Request) -> LoginResponse:
    settings: Settings = request.app.state.settings
    reused = False
    async with _pool(request).acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_REFRESH_ROW, sha256(body.refresh_token))
        if row is None or row["revoked_at"] is not None:
            raise ApiError(401, "invalid_refresh_token", "unknown or revoked refresh token")
        if row["used_at"] is not None:
            # Two holders of one token: we cannot tell which is the thief, so end both.
            await _revoke_session(conn, row["session_id"], "refresh token reused")
            reused = True
        elif row["expires_at"] <= datetime.now(UTC):
            raise ApiError(401, "invalid_refresh_token", "refresh token expired; sign in again")
        else:
            await conn.execute(
                "UPDATE refresh_tokens SET used_at = now() WHERE token_sha256 = $1",
                sha256(body.refresh_token),
            )
            new = await _new_refresh(conn, row["session_id"], row["expires_at"])
    if reused:  # raised after the commit, so the revocation sticks
        raise ApiError(
            401, "refresh_token_reused", "refresh token already used; the session is revoked"
        )
    p = Principal(row["user_id"], row["tenant_id"], row["email"], row["role"])
    return _pair(settings, p, row["session_id"], new, row["expires_at"])


@router.post(
    "/auth/logout",
    status_code=204,
    tags=["auth"],
    responses={400: {"model": ErrorResponse, "description": "Called with an API key"}},
    summary="End the session: its refresh tokens and this access token stop working",
)
async def logout(
    user: CurrentUser, request: Request, body: LogoutRequest | None = None
) -> Response:
    if user.api_key_id is not None:
        raise ApiError(
            400, "not_a_session", "an API key has no session; delete it via /api-keys/{key_id}"
        )
    async with _pool(request).acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM revoked_jtis WHERE expires_at < now()")  # housekeeping
        await conn.execute(
            """INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, to_timestamp($2))
               ON CONFLICT (jti) DO NOTHING""",
            user.jti,
            user.exp or 0,
        )
        if user.session_id:
            await _revoke_session(conn, user.session_id, "logout")
        if body is not None and body.refresh_token:
            sid = await conn.fetchval(
                """SELECT t.session_id::text FROM refresh_tokens t
                   JOIN auth_sessions s ON s.id = t.session_id
                   WHERE t.token_sha256 = $1 AND s.user_id = $2""",
                sha256(body.refresh_token),
                user.user_id,
            )
            if sid is not None:
                await _revoke_session(conn, sid, "logout")
    return Response(status_code=204)


# -- API keys -------------------------------------------------------------------


class ApiKeyIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: Role = "viewer"


class ApiKeyOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str = Field(description="the key's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown once: send as `Authorization: Bearer fak_...`")


def _check_may_grant(user: Principal, role: str) -> None:
    if user.api_key_id is not None:
        raise ApiError(403, "forbidden", "API keys cannot manage API keys; sign in as a user")
    if role == "owner" and user.role != "owner":
        raise ApiError(403, "forbidden", "only an owner may handle owner keys", "role")


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=201,
    tags=["auth"],
    dependencies=[require_role(*KEY_ADMINS)],
)
async def create_api_key(body: ApiKeyIn, user: CurrentUser, request: Request) -> ApiKeyCreated:
    _check_may_grant(user, body.role)
    key = new_secret(API_KEY_PREFIX)
    row = await _pool(request).fetchrow(
        """INSERT INTO api_keys (tenant_id, created_by, name, role, prefix, key_sha256)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        user.tenant_id,
        user.user_id,
        body.name,
        body.role,
        key[:12],
        sha256(key),
    )
    assert row is not None
    return ApiKeyCreated(key=key, **_key_fields(row))


def _key_fields(r: asyncpg.Record) -> dict[str, Any]:
    return {k: r[k] for k in ApiKeyOut.model_fields}


@router.get(
    "/api-keys",
    response_model=list[ApiKeyOut],
    tags=["auth"],
    dependencies=[require_role(*KEY_ADMINS)],
)
async def list_api_keys(user: CurrentUser, request: Request) -> list[ApiKeyOut]:
    rows = await _pool(request).fetch(
        "SELECT * FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY id",
        user.tenant_id,
    )
    return [ApiKeyOut(**_key_fields(r)) for r in rows]


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    tags=["auth"],
    dependencies=[require_role(*KEY_ADMINS)],
)
async def delete_api_key(key_id: int, user: CurrentUser, request: Request) -> Response:
    pool = _pool(request)
    role = await pool.fetchval(
        "SELECT role FROM api_keys WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
        key_id,
        user.tenant_id,
    )
    if role is None:
        raise ApiError(404, "not_found", f"API key {key_id} not found")
    _check_may_grant(user, role)
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)
    return Response(status_code=204)
