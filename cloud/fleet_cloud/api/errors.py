"""One JSON error shape for every failure: {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

import logging

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(HTTPException):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, message)
        self.code = code
        self.field = field


def _body(code: str, message: str, field: str | None = None) -> dict[str, object]:
    err: dict[str, object] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            _body(code, str(exc.detail), getattr(exc, "field", None)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Input PostgreSQL cannot take (an id beyond 64 bits, a NUL in text) is the
    # caller's mistake, not a server error: 422, whichever route it reached.
    @app.exception_handler(OverflowError)
    async def out_of_range(_: Request, exc: OverflowError) -> JSONResponse:
        return JSONResponse(
            _body("invalid_request", "a number is out of range (64-bit integers)"), status_code=422
        )

    @app.exception_handler(asyncpg.DataError)
    async def bad_value(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        text = str(exc)
        if isinstance(exc, asyncpg.CharacterNotInRepertoireError):
            msg = "text may not contain NUL characters"
        elif text.startswith("invalid input for query argument"):
            msg = "invalid value: " + text.split(": ", 1)[-1][:200]
        else:  # a data error the request did not cause: a bug, so a 500
            return await _server_error(request, exc)
        return JSONResponse(_body("invalid_request", msg), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        msg = f"{field}: {first['msg']}" if field else str(first["msg"])
        return JSONResponse(_body("invalid_request", msg, field), status_code=422)


async def _server_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    return JSONResponse(_body("internal_error", "internal server error"), status_code=500)


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "Missing, invalid or expired token"},
    403: {"model": ErrorResponse, "description": "Your role may not do this"},
    404: {"model": ErrorResponse, "description": "No such resource in your tenant"},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the culprit"},
    429: {"model": ErrorResponse, "description": "Over the tenant's request rate; see Retry-After"},
}
