"""HTTP ingest for devices that cannot speak MQTT (phones, third-party trackers).

Same pipeline as MQTT: the same wire models and limits, the same plausibility
filters, the same batches and transactions. The answer comes after the
commit, so a 200 is the end-to-end ack: the device may forget what it lists.

Identity comes from the device token, never from the body:
- ``Authorization: Bearer fdt_...`` (the token names its device), or
- HTTP Basic with the device id as user name and the token as password (what
  OwnTracks sends); a token of another device is refused with 403.

Bodies: a wire v1 telemetry batch; one wire fix (``boot`` from the query,
default 0); or an OwnTracks ``_type: location`` message (boot 1, seq = its
``tst``, so a retransmission is stored once).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fleet_cloud import device_tokens
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError
from fleet_cloud.ingest.consumer import IngestWorker
from fleet_cloud.registry import DeviceInfo
from fleet_wire import (
    CT_JSON_ZLIB,
    MAX_PAYLOAD_BYTES,
    WireError,
    decode_json,
    decode_telemetry,
    seq_ranges,
)

router = APIRouter(prefix="/api/v1", tags=["ingest"], responses=ERROR_RESPONSES)

OWNTRACKS_BOOT = 1
COMMIT_WAIT_S = 10.0


class RejectedOut(BaseModel):
    seq: int | None
    reason: str


class IngestResult(BaseModel):
    device_id: str
    boot: int
    acked: list[tuple[int, int]] = Field(
        description="inclusive seq ranges now durable (stored, already stored, or dead-lettered)"
    )
    filtered: dict[str, str] = Field(
        default_factory=dict, description="seq -> plausibility reason (stored, off the map)"
    )
    rejected: list[RejectedOut] = Field(default_factory=list)


async def _authenticate(request: Request, authorization: str | None) -> DeviceInfo:
    if not authorization:
        raise ApiError(401, "unauthorized", "device token required (Bearer or Basic)")
    scheme, _, cred = authorization.partition(" ")
    claimed: str | None = None
    if scheme.lower() == "bearer":
        token = cred.strip()
    elif scheme.lower() == "basic":
        try:
            claimed, _, token = base64.b64decode(cred, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "unauthorized", "malformed Basic credentials") from None
    else:
        raise ApiError(401, "unauthorized", "use a Bearer or Basic device token")
    pool = request.app.state.pool
    device_id = await device_tokens.device_for(pool, token)
    if device_id is None:
        raise ApiError(401, "invalid_token", "unknown, revoked or disabled device token")
    if claimed is not None and claimed != device_id:
        raise ApiError(403, "forbidden", "this token belongs to another device")
    registry = request.app.state.registry
    dev: DeviceInfo | None = await registry.get(device_id)
    if dev is None or not dev.enabled:
        raise ApiError(401, "invalid_token", "unknown, revoked or disabled device token")
    return dev


def _owntracks(doc: dict[str, Any]) -> bytes:
    """An OwnTracks location as a one-fix wire batch."""
    tst = doc.get("tst")
    if not isinstance(tst, int) or isinstance(tst, bool):
        raise WireError("schema", "tst: an integer epoch second is required")
    fix: dict[str, Any] = {
        "seq": tst,
        "t": tst * 1000,
        "lat": doc.get("lat"),
        "lon": doc.get("lon"),
    }
    for ours, theirs in (("spd", "vel"), ("hdg", "cog"), ("alt", "alt")):
        if isinstance(doc.get(theirs), int | float) and not isinstance(doc.get(theirs), bool):
            fix[ours] = float(doc[theirs])
    return orjson.dumps({"v": 1, "boot": OWNTRACKS_BOOT, "fixes": [fix]})


def _as_batch(raw: bytes, content_type: str | None, boot: int) -> tuple[bytes, str | None, bool]:
    """(wire batch bytes, content type, is OwnTracks) for any accepted body shape."""
    doc = decode_json(raw, content_type)
    if isinstance(doc, dict) and doc.get("_type") == "location":
        return _owntracks(doc), None, True
    if isinstance(doc, dict) and "fixes" not in doc and "seq" in doc:
        return orjson.dumps({"v": 1, "boot": boot, "fixes": [doc]}), None, False
    return raw, content_type, False


@router.post(
    "/ingest",
    response_model=IngestResult,
    summary="Store one fix, a wire batch or an OwnTracks location",
    responses={
        200: {"description": "Committed: `acked` lists what the device may forget"},
        413: {"description": "Body over 256 KiB"},
        503: {"description": "Storage unavailable: retry later (nothing is lost by retrying)"},
    },
)
async def ingest(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
    boot: Annotated[int, Query(ge=0, lt=2**53, description="boot id for a single fix")] = 0,
) -> Any:
    dev = await _authenticate(request, authorization)
    raw = await request.body()
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ApiError(413, "too_large", f"body over {MAX_PAYLOAD_BYTES} bytes")
    ct = CT_JSON_ZLIB if content_type == CT_JSON_ZLIB else None
    worker: IngestWorker = request.app.state.http_ingest
    topic = f"http:{dev.device_id}"
    try:
        body, body_ct, owntracks = _as_batch(raw, ct, boot)
        batch_boot, fixes, rejected = decode_telemetry(body, body_ct)
    except WireError as e:
        worker.record_dead(topic, e.reason, e.detail, raw, dev.device_id)
        raise ApiError(422, e.reason, e.detail or e.reason) from None
    handled = worker.add_fixes(topic, dev, batch_boot, fixes, rejected, datetime.now(UTC))
    filtered = {str(k): v for k, v in worker.last_filtered.items()}
    commit = worker.commit_waiter()
    try:
        await asyncio.wait_for(asyncio.shield(commit), COMMIT_WAIT_S)
    except TimeoutError:
        return JSONResponse(
            {"error": {"code": "storage_unavailable", "message": "not committed yet; retry"}},
            status_code=503,
            headers={"Retry-After": "10"},
        )
    if owntracks:
        return JSONResponse([])  # what OwnTracks expects from an HTTP endpoint
    return IngestResult(
        device_id=dev.device_id,
        boot=batch_boot,
        acked=seq_ranges(handled),
        filtered=filtered,
        rejected=[RejectedOut(seq=r.seq, reason=r.reason) for r in rejected],
    )


# The seed documents' paths, same handler (kept out of the schema: one documented way).
router.add_api_route("/gps", ingest, methods=["POST"], include_in_schema=False)
router.add_api_route("/tracking/batch", ingest, methods=["POST"], include_in_schema=False)
