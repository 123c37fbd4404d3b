"""Bytes <-> models for wire contract v1.

A payload is JSON, optionally zlib-compressed. The MQTT v5 content-type
property says which (``CT_JSON`` / ``CT_JSON_ZLIB``); for MQTT 3.1.1 clients,
which have no properties, the first byte tells them apart unambiguously
(``{`` is 0x7B, a zlib stream starts with 0x78).

Decoding never raises anything but ``WireError``, whose ``reason`` is the
short code stored with a dead letter.
"""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from fleet_wire.models import MAX_FIXES_PER_BATCH, SCHEMA_VERSION, Fix, TelemetryBatch

CT_JSON = "application/json"
CT_JSON_ZLIB = "application/json+zlib"

# Within the broker's max_packet_size (mosquitto/conf.d/20-limits.conf).
MAX_PAYLOAD_BYTES = 256 * 1024
# A compressed payload may not inflate past this (zip-bomb guard).
MAX_DECODED_BYTES = 1024 * 1024
# Below this, zlib's header and checksum cost more than compression saves.
COMPRESS_MIN_BYTES = 200

M = TypeVar("M", bound=BaseModel)


class WireError(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def encode_json(obj: Any) -> bytes:
    """Compact JSON of a model (None fields left out) or of plain data."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", exclude_none=True)
    # orjson's result keeps a 4 KiB allocation whatever its length; callers
    # hold many small encodings (queues, unacked fixes), so keep an exact copy.
    return bytes(memoryview(orjson.dumps(obj)))


def maybe_compress(body: bytes) -> tuple[bytes, str]:
    """Compress when it pays; return (payload, content type)."""
    if len(body) >= COMPRESS_MIN_BYTES:
        packed = zlib.compress(body, 6)
        if len(packed) < len(body):
            return packed, CT_JSON_ZLIB
    return body, CT_JSON


def telemetry_body(boot: int, fix_json: list[bytes]) -> bytes:
    """Assemble a TelemetryBatch from fixes already encoded with ``encode_json``.

    The agent stores each fix encoded once, so a batch is a concatenation, not
    a re-serialisation.
    """
    return b'{"v":%d,"boot":%d,"fixes":[%b]}' % (SCHEMA_VERSION, boot, b",".join(fix_json))


def _inflate(payload: bytes) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(payload, MAX_DECODED_BYTES)
    except zlib.error as e:
        raise WireError("bad_compression", str(e)) from None
    if d.unconsumed_tail:
        raise WireError("too_large", f"inflates past {MAX_DECODED_BYTES} bytes")
    if not d.eof:
        raise WireError("bad_compression", "truncated zlib stream")
    if d.unused_data:
        raise WireError("bad_compression", "bytes after the end of the zlib stream")
    return out


def decode_json(payload: bytes, content_type: str | None = None) -> Any:
    """Payload bytes -> JSON value, enforcing size limits and the encoding."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if not payload:
        raise WireError("empty")
    compressed = content_type == CT_JSON_ZLIB or (content_type is None and payload[0] == 0x78)
    if content_type not in (None, CT_JSON, CT_JSON_ZLIB):
        raise WireError("bad_content_type", content_type[:100])
    body = _inflate(payload) if compressed else payload
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError("not_json", str(e)[:200]) from None


def _check_version(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise WireError("schema", "payload is not a JSON object")
    v = doc.get("v")
    if type(v) is not int or v != SCHEMA_VERSION:  # true == 1 and 1.0 == 1 in Python
        raise WireError("unsupported_version", f"v={v!r}"[:100])
    return doc


def _short(e: ValidationError) -> str:
    errs = e.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errs[:5]]
    more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
    return "; ".join(parts)[:480] + more


def decode_model(payload: bytes, model: type[M], content_type: str | None = None) -> M:
    """Decode and validate one message of a known kind."""
    doc = _check_version(decode_json(payload, content_type))
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise WireError("schema", _short(e)) from None


class RejectedFix:
    """One record of a batch that failed validation, kept for the dead-letter table."""

    __slots__ = ("raw", "reason", "seq")

    def __init__(self, raw: Any, reason: str, seq: int | None) -> None:
        self.raw = raw
        self.reason = reason
        self.seq = seq


def decode_telemetry(
    payload: bytes, content_type: str | None = None
) -> tuple[int, list[Fix], list[RejectedFix]]:
    """Decode a telemetry batch, salvaging the valid fixes of a partly bad one.

    Returns (boot, valid fixes, rejected records). Raises WireError when the
    envelope itself is unusable (then nothing in it can be acked either).
    """
    doc = _check_version(decode_json(payload, content_type))
    try:
        batch = TelemetryBatch.model_validate(doc)
        return batch.boot, list(batch.fixes), []
    except ValidationError as whole:
        # Slow path, only for bad batches: find which records are at fault.
        raw_fixes = doc.get("fixes")
        envelope = {k: v for k, v in doc.items() if k != "fixes"}
        try:
            shell = TelemetryBatch.model_validate({**envelope, "fixes": [_PLACEHOLDER]})
        except ValidationError:
            raise WireError("schema", _short(whole)) from None
        if not isinstance(raw_fixes, list) or not 0 < len(raw_fixes) <= MAX_FIXES_PER_BATCH:
            raise WireError("schema", _short(whole)) from None
        good: list[Fix] = []
        bad: list[RejectedFix] = []
        for raw in raw_fixes:
            try:
                good.append(Fix.model_validate(raw))
            except ValidationError as e:
                seq = raw.get("seq") if isinstance(raw, dict) else None
                seq_ok = isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < 2**53
                bad.append(RejectedFix(raw, "schema: " + _short(e), seq if seq_ok else None))
        return shell.boot, good, bad


_PLACEHOLDER = {"seq": 1, "t": 1_700_000_000_000, "lat": 0.0, "lon": 0.0}
