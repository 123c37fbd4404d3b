"""Who is calling: password login, JWT access tokens (HS256 pinned; exp, iat, jti
required), API keys (``fak_...``), and the role check every write goes through.

Every route that needs a caller depends on ``current_principal`` (``CurrentUser``);
writes add ``require_role(...)``, which depends on it too (FastAPI resolves it once).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet_cloud.api.errors import ApiError
from fleet_cloud.api.tenant_ratelimit import tenant_limiter
from fleet_cloud.directory import ROLES
from fleet_cloud.settings import Settings

ALGORITHM = "HS256"
API_KEY_PREFIX = "fak_"
_hasher = PasswordHasher()
# A real hash to verify against when the email is unknown, so a login's
# timing does not tell whether an account exists.
_DUMMY_HASH = _hasher.hash("not-a-password")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int  # for an API key: the user who made it
    tenant_id: int
    email: str
    role: str
    jti: str = ""
    exp: int | None = None  # None: an API key (valid until deleted)
    session_id: str | None = None
    api_key_id: int | None = None


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def issue_token(settings: Settings, p: Principal, session_id: str | None = None) -> str:
    now = int(time.time())
    claims = {
        "sub": str(p.user_id),
        "tid": p.tenant_id,
        "email": p.email,
        "role": p.role,
        "iat": now,
        "exp": now + settings.jwt_ttl_s,
        "jti": uuid.uuid4().hex,
        "sid": session_id or p.session_id or "",
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_token(settings: Settings, token: str) -> Principal:
    """Signature, algorithm and claims only; `authenticate` also checks revocation."""
    try:
        c = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "jti", "sub", "tid", "role"]},
        )
        return Principal(
            int(c["sub"]),
            int(c["tid"]),
            str(c.get("email", "")),
            str(c["role"]),
            jti=str(c["jti"]),
            exp=int(c["exp"]),
            session_id=str(c.get("sid") or "") or None,
        )
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise ApiError(401, "invalid_token", f"invalid token: {e}") from None


_REVOKED = """
SELECT EXISTS (SELECT 1 FROM revoked_jtis WHERE jti = $1)
    OR EXISTS (SELECT 1 FROM auth_sessions WHERE id = $2::uuid AND revoked_at IS NOT NULL)"""

# last_used_at is written at most once a minute: not one row update per request.
_API_KEY = """
WITH k AS (
    SELECT k.id, k.tenant_id, k.role, k.created_by, k.last_used_at, u.email
    FROM api_keys k JOIN users u ON u.id = k.created_by
    WHERE k.key_sha256 = $1 AND k.revoked_at IS NULL
), touched AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE id IN (SELECT id FROM k WHERE last_used_at IS NULL
                                     OR last_used_at < now() - interval '1 minute')
)
SELECT id, tenant_id, role, created_by, email FROM k"""


async def authenticate(settings: Settings, pool: asyncpg.Pool, token: str) -> Principal:
    """The caller behind a bearer token (JWT or API key), or ApiError 401."""
    if token.startswith(API_KEY_PREFIX):
        row = await pool.fetchrow(_API_KEY, sha256(token))
        if row is None:
            raise ApiError(401, "invalid_token", "unknown or revoked API key")
        return Principal(
            row["created_by"], row["tenant_id"], row["email"], row["role"], api_key_id=row["id"]
        )
    p = decode_token(settings, token)
    sid = _uuid_or_none(p.session_id)
    if await pool.fetchval(_REVOKED, p.jti, sid):
        raise ApiError(401, "token_revoked", "this token was revoked (signed out)")
    return p


def _uuid_or_none(s: str | None) -> str | None:
    try:
        return str(uuid.UUID(s)) if s else None
    except ValueError:
        return None


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None:
        raise ApiError(401, "unauthorized", "missing bearer token")
    who = await authenticate(request.app.state.settings, request.app.state.pool, creds.credentials)
    # Every authenticated request passes here once: the per-tenant limit is applied here.
    await tenant_limiter(request).check(who.tenant_id)
    return who


CurrentUser = Annotated[Principal, Depends(current_principal)]


class RoleCheck:
    """A dependency that lets only the given roles through (403 otherwise).

    A class rather than a closure so tests and docs can read ``.roles`` off a route.
    """

    def __init__(self, roles: tuple[str, ...]) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        self.roles = roles

    async def __call__(self, user: CurrentUser) -> Principal:
        if user.role not in self.roles:
            raise ApiError(403, "forbidden", f"role {user.role!r} may not do this")
        return user


def require_role(*roles: str) -> Any:
    """``dependencies=[require_role("owner", "manager")]`` on a route."""
    return Depends(RoleCheck(roles))


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)
