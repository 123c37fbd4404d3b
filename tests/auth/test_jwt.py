"""Forged and broken access tokens: every one answers 401 with the one error shape."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from tests.auth.conftest import AuthCloud


def _b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _claims(ac: AuthCloud, **over: object) -> dict[str, object]:
    """Claims as the server would issue them for tenant A's owner."""
    good = jwt.decode(ac.token(), ac.secret, algorithms=["HS256"])
    return {**good, "jti": uuid.uuid4().hex, **over}


def _forged(ac: AuthCloud) -> dict[str, str]:
    now = int(time.time())
    claims = _claims(ac)
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    head, payload, sig = jwt.encode(claims, ac.secret, algorithm="HS256").split(".")
    tampered = _b64(
        {
            **json.loads(base64.urlsafe_b64decode(payload + "==")),
            "role": "owner",
            "tid": int(str(claims["tid"])) + 1,
        }
    )
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{sig}",
        "HS512 with the right key": jwt.encode(claims, ac.secret, algorithm="HS512"),
        "wrong key": jwt.encode(claims, "not-the-" + ac.secret, algorithm="HS256"),
        "expired": jwt.encode(
            {**claims, "iat": now - 7200, "exp": now - 3600}, ac.secret, algorithm="HS256"
        ),
        "missing exp": jwt.encode(no_exp, ac.secret, algorithm="HS256"),
        "missing jti": jwt.encode(
            {k: v for k, v in claims.items() if k != "jti"}, ac.secret, algorithm="HS256"
        ),
        "tampered payload": f"{head}.{tampered}.{sig}",
        "garbage": "not.a.jwt",
        "empty": "",
    }


def test_forged_tokens_are_rejected(auth_cloud: AuthCloud) -> None:
    for name, token in _forged(auth_cloud).items():
        a = auth_cloud.call("GET", "/api/v1/vehicles", token=token or None)
        assert a.status == 401, (name, a.body)
        assert a.error_code() in ("invalid_token", "unauthorized"), name


def test_a_valid_token_made_with_the_key_passes(auth_cloud: AuthCloud) -> None:
    """The control: the forgeries above fail for what they break, not for being ours."""
    token = jwt.encode(_claims(auth_cloud), auth_cloud.secret, algorithm="HS256")
    assert auth_cloud.call("GET", "/api/v1/vehicles", token=token).status == 200


@pytest.mark.parametrize("path", ["/api/v1/geofences", "/api/v1/events", "/api/v1/api-keys"])
def test_other_routes_use_the_same_check(auth_cloud: AuthCloud, path: str) -> None:
    token = _forged(auth_cloud)["alg none"]
    a = auth_cloud.call("GET", path, token=token)
    assert a.status == 401 and a.error_code() == "invalid_token"
