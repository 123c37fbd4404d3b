"""Password login and JWT bearer tokens (HS256 pinned; exp required)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet_cloud.api.errors import ApiError
from fleet_cloud.settings import Settings

ALGORITHM = "HS256"
_hasher = PasswordHasher()
# A real hash to verify against when the email is unknown, so a login's
# timing does not tell whether an account exists.
_DUMMY_HASH = _hasher.hash("not-a-password")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    tenant_id: int
    email: str
    role: str


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def issue_token(settings: Settings, p: Principal) -> str:
    now = int(time.time())
    claims = {
        "sub": str(p.user_id),
        "tid": p.tenant_id,
        "email": p.email,
        "role": p.role,
        "iat": now,
        "exp": now + settings.jwt_ttl_s,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_token(settings: Settings, token: str) -> Principal:
    try:
        c = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "tid", "role"]},
        )
        return Principal(int(c["sub"]), int(c["tid"]), str(c.get("email", "")), str(c["role"]))
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise ApiError(401, "invalid_token", f"invalid token: {e}") from None


_bearer = HTTPBearer(auto_error=False)


def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None:
        raise ApiError(401, "unauthorized", "missing bearer token")
    settings: Settings = request.app.state.settings
    return decode_token(settings, creds.credentials)


CurrentUser = Annotated[Principal, Depends(current_principal)]
